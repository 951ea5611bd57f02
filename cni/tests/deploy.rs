//! `deploy/` is valid: every manifest passes the Kubernetes schemas
//! (`scripts/cni/check-deploy.sh`, strict, offline), and the
//! NetworkAttachmentDefinition's CNI configuration is one petrel-cni accepts.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use petrel_cni::config::NetConf;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let o = Command::new(root().join("scripts/cni/check-deploy.sh")).output().unwrap();
    assert!(
        o.status.success(),
        "deploy/ does not validate (exit 2: run scripts/bootstrap.sh for kubernetes-validate):\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    for kind in ["daemonset/petrel", "pod/testpmd-1", "serviceaccount/petrel"] {
        assert!(out.contains(&format!("passed for resource {kind}")), "{kind} not validated:\n{out}");
    }
}

#[test]
fn the_network_attachment_config_is_a_valid_petrel_network() {
    let yaml = std::fs::read_to_string(root().join("deploy/network-attachment.yaml")).unwrap();
    // The block scalar under `config: |`, to the end of the file.
    let (_, block) = yaml.split_once("config: |\n").expect("spec.config is a block scalar");
    let conf: String = block.lines().map(|l| l.trim_start()).collect::<Vec<_>>().join("\n");
    let c = NetConf::parse(conf.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{conf}"));
    assert_eq!(c.name, "dpdk-net");
    assert_eq!(c.logical_port("testpmd-1", "default"), "testpmd-1.default.dpdk-net.default.ovn");
    assert!(c.shared_dir.as_deref().unwrap().contains("{K8S_POD_UID}"));
}
