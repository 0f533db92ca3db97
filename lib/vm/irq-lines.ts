/**
 * ISA interrupt lines into KVM's in-kernel PIC/IOAPIC. Several devices may
 * share one line (COM1 and COM3 both use IRQ 4), so each line is the OR of
 * its sources' levels and KVM_IRQ_LINE is issued only when that OR changes.
 */
import type { IrqLine } from '../devices/types';

export class IrqLines {
  private readonly levels = new Map<number, Set<object>>();
  private readonly setLine: (irq: number, level: boolean) => void;

  constructor(setLine: (irq: number, level: boolean) => void) {
    this.setLine = setLine;
  }

  /** A line for one source on `irq`. */
  line(irq: number): IrqLine {
    const source = {};
    let set = this.levels.get(irq);
    if (!set) this.levels.set(irq, (set = new Set()));
    const high = set;
    return {
      set: (level: boolean) => {
        const before = high.size > 0;
        if (level) high.add(source);
        else high.delete(source);
        const after = high.size > 0;
        if (before !== after) this.setLine(irq, after);
      },
      pulse: () => {
        if (high.size > 0) return; // already asserted by someone: the edge is there
        this.setLine(irq, true);
        this.setLine(irq, false);
      },
    };
  }
}
