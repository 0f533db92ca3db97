import test from 'ava';
import { arm64CoreRegId, arm64SysRegId, kvmArmSpiIrq, MPIDR_EL1 } from '../../../lib/hv/arm64-regs';
import { NodevmmError } from '../../../lib/errors';

// Expected ids are the values QEMU and kvmtool pass to KVM_SET_ONE_REG, computed
// by hand from arch/arm64/include/uapi/asm/kvm.h: 0x6030_0000_0010_xxxx with the
// struct kvm_regs byte offset divided by 4.
test('core register ids are struct kvm_regs offsets in 32-bit words', (t) => {
  t.is(arm64CoreRegId('x0'), 0x6030_0000_0010_0000n);
  t.is(arm64CoreRegId('x1'), 0x6030_0000_0010_0002n);
  t.is(arm64CoreRegId('x30'), 0x6030_0000_0010_003cn);
  t.is(arm64CoreRegId('sp'), 0x6030_0000_0010_003en);
  t.is(arm64CoreRegId('pc'), 0x6030_0000_0010_0040n);
  t.is(arm64CoreRegId('pstate'), 0x6030_0000_0010_0042n);
  t.is(arm64CoreRegId('sp_el1'), 0x6030_0000_0010_0044n);
});

test('unknown core register names are refused with ERR_ARM64_REG', (t) => {
  for (const bad of ['x31', 'x-1', 'w0', 'xx']) {
    const e = t.throws(() => arm64CoreRegId(bad as 'x0'), { instanceOf: NodevmmError });
    t.is(e?.code, 'ERR_ARM64_REG');
  }
});

test('MPIDR_EL1 is system register S3_0_C0_C0_5', (t) => {
  t.is(MPIDR_EL1, 0x6030_0000_0013_c005n);
  // KVM_REG_ARM_TIMER_CTL from the uapi header: ARM64_SYS_REG(3, 3, 14, 3, 1).
  t.is(arm64SysRegId(3, 3, 14, 3, 1), 0x6030_0000_0013_df19n);
});

test('SPI numbers become KVM_IRQ_LINE type SPI with INTID 32 + spi', (t) => {
  t.is(kvmArmSpiIrq(0), 0x0100_0020);
  t.is(kvmArmSpiIrq(1), 0x0100_0021);
  t.is(kvmArmSpiIrq(987), 0x0100_03fb);
});

test('SPIs outside the GIC range are refused with ERR_ARM64_IRQ', (t) => {
  for (const bad of [-1, 988, 1.5, NaN]) {
    const e = t.throws(() => kvmArmSpiIrq(bad), { instanceOf: NodevmmError });
    t.is(e?.code, 'ERR_ARM64_IRQ');
  }
});
