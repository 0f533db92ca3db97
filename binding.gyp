{
  "targets": [
    {
      "target_name": "nodevmm",
      "sources": ["native/addon.cc", "native/common.cc", "native/guest_ram.cc", "native/vcpu_thread.cc", "native/route_table.cc", "native/vm_channel.cc", "native/x86_regs_js.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "conditions": [
        ["OS=='win'", {
          "sources": ["native/whp_api.cc", "native/whp_vm.cc", "native/whp_vcpu.cc", "native/whp_vcpu_run.cc"],
          "defines": ["_WIN32_WINNT=0x0A00", "WIN32_LEAN_AND_MEAN", "NOMINMAX"],
          "libraries": ["synchronization.lib"],
          "msvs_settings": {
            "VCCLCompilerTool": { "AdditionalOptions": ["/std:c++17", "/W3"], "ExceptionHandling": 1 }
          }
        }],
        ["OS!='win'", {
          "sources": ["native/kvm_system.cc", "native/kvm_vm.cc", "native/kvm_vcpu.cc", "native/kvm_vcpu_run.cc", "native/kvm_arm64.cc", "native/vhost.cc", "native/vsock_socket.cc", "native/fd_watcher.cc", "native/tap.cc", "native/block_io.cc", "native/file_ops.cc", "native/unix_socket.cc", "native/deferred_close.cc", "native/crash_report.cc"],
          "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fstack-protector-strong"],
          "cflags_cc!": ["-fno-exceptions"]
        }]
      ]
    }
  ]
}
