//! Generates DPDK bindings at build time against the system DPDK.
//!
//! DPDK's fast-path API (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, …) is
//! `static inline`, so bindgen's `wrap_static_fns` emits a C file with an
//! exported wrapper for each one; we compile it with DPDK's own cflags and link
//! it in. Nothing generated here is ever committed.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let dpdk = match pkg_config::Config::new().atleast_version("22.11").probe("libdpdk") {
        Ok(lib) => lib,
        Err(_) => {
            eprintln!(
                "error: DPDK >= 22.11 not found through pkg-config (libdpdk): install it with \
                 `apt-get install libdpdk-dev` (or run scripts/bootstrap.sh as root)"
            );
            std::process::exit(1);
        }
    };

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let wrappers = out.join("static_fns");

    // pkg-config's cflags carry `-include rte_config.h -march=…`, which both
    // bindgen (clang) and the C wrapper compile need.
    let cflags = pkg_config::get_variable("libdpdk", "cflags").ok();
    let cflags: Vec<String> = match cflags {
        Some(s) if !s.is_empty() => s.split_whitespace().map(str::to_owned).collect(),
        _ => pkg_cflags(),
    };

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(dpdk.include_paths.iter().map(|p| format!("-I{}", p.display())))
        .clang_args(cflags.iter().filter(|f| f.starts_with("-march") || f.starts_with("-m")))
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in [
        "rte_eal_.*",
        "rte_eth_.*",
        "rte_pktmbuf_.*",
        "rte_mbuf_.*",
        "rte_mempool_.*",
        "rte_lcore_.*",
        "rte_socket_id",
        "rte_get_tsc_hz",
        "rte_get_timer_hz",
        "rte_get_main_lcore",
        "rte_rdtsc",
        "rte_rdtsc_precise",
        "rte_get_tsc_cycles",
        "rte_delay_us_block",
        "rte_strerror",
        "rte_errno",
        "petrel_rte_errno",
        "per_lcore__rte_errno",
        "rte_vdev_.*",
        "rte_dev_.*",
        "rte_prefetch.*",
        "rte_vhost_.*",
        "rte_ring_.*",
        "rte_thread_.*",
        "rte_zmalloc.*",
        "rte_free",
    ] {
        builder = builder.allowlist_function(f).allowlist_var(f);
    }
    for t in ["rte_mbuf", "rte_mempool", "rte_eth_.*", "rte_ether_addr"] {
        builder = builder.allowlist_type(t);
    }
    for v in ["RTE_.*", "RTE_MBUF_.*", "RTE_PKTMBUF_HEADROOM", "RTE_ETH_.*", "RTE_MAX_.*"] {
        builder = builder.allowlist_var(v);
    }
    // Packed/aligned DPDK structs bindgen cannot express are kept opaque.
    builder = builder
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .blocklist_type("max_align_t");

    let bindings = builder.generate().unwrap_or_else(|e| {
        eprintln!("error: bindgen failed on DPDK headers: {e}");
        std::process::exit(1);
    });
    bindings.write_to_file(out.join("bindings.rs")).expect("write bindings.rs into OUT_DIR");

    // Compile the wrappers of DPDK's static inline functions.
    let c_file = wrappers.with_extension("c");
    let mut cc = cc::Build::new();
    cc.file(&c_file).include(env::current_dir().expect("cwd is the crate dir")).warnings(false);
    for p in &dpdk.include_paths {
        cc.include(p);
    }
    for f in &cflags {
        if !f.starts_with("-I") {
            cc.flag(f);
        }
    }
    cc.flag("-Wno-deprecated-declarations");
    cc.compile("dpdk_static_fns");
}

/// `pkg-config --cflags libdpdk`, split; used when the variable lookup fails.
fn pkg_cflags() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config --cflags libdpdk");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
}
