{
  "targets": [
    {
      "target_name": "nodevmm",
      "sources": ["native/addon.cc", "native/common.cc", "native/guest_ram.cc", "native/kvm_system.cc", "native/kvm_vm.cc", "native/kvm_vcpu.cc", "native/vcpu_thread.cc", "native/kvm_vcpu_run.cc", "native/route_table.cc", "native/vm_channel.cc", "native/kvm_arm64.cc", "native/vhost.cc", "native/vsock_socket.cc", "native/fd_watcher.cc", "native/tap.cc", "native/block_io.cc", "native/file_ops.cc", "native/unix_socket.cc", "native/crash_report.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fstack-protector-strong"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
