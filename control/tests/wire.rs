//! Wire format against a real ovsdb-server: list_dbs, get_schema, transact
//! (every operation kind, named-uuid), errors, concurrent requests, echo.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Ovn, OvnOptions};
use petrel_control::ovsdb::transact::{map, named_uuid, set, uuid_ref};
use petrel_control::ovsdb::{
    Condition, Connection, ConnectionOptions, DatabaseSchema, Error, Function, Mutation, Mutator, Operation, Remote,
    RowValues, Until,
};
use serde_json::{json, Value};
use std::time::Duration;

const SB: &str = "OVN_Southbound";

async fn connect(ovn: &Ovn) -> Connection {
    let remote: Remote = ovn.sb_remote().parse().unwrap();
    let stream = remote.connect(Duration::from_secs(5)).await.unwrap();
    Connection::open(stream, remote.to_string(), ConnectionOptions::default()).0
}

fn standalone() -> Ovn {
    Ovn::start(OvnOptions { clustered_sb: false, northd: false })
}

#[tokio::test]
async fn wire_list_dbs_and_get_schema() {
    let ovn = standalone();
    let c = connect(&ovn).await;
    let dbs = c.list_dbs().await.unwrap();
    assert!(dbs.contains(&SB.to_owned()) && dbs.contains(&"_Server".to_owned()), "{dbs:?}");
    let schema = c.get_schema(SB).await.unwrap();
    let file: Value = serde_json::from_str(&std::fs::read_to_string(common::SB_SCHEMA).unwrap()).unwrap();
    assert_eq!(schema, DatabaseSchema::from_json(&file).unwrap());
    let e = c.get_schema("nope").await.unwrap_err();
    assert!(matches!(e, Error::Rpc { .. }), "{e}");
}

#[tokio::test]
async fn wire_transact_round_trip() {
    let ovn = standalone();
    let c = connect(&ovn).await;
    // insert with named-uuid references inside one transaction
    let r = c
        .transact(
            SB,
            &[
                Operation::insert(
                    "Encap",
                    RowValues::new()
                        .set("type", "geneve")
                        .set("ip", "192.0.2.1")
                        .set("options", map([("csum", "true")]))
                        .set("chassis_name", "hv1"),
                    Some("e"),
                ),
                Operation::insert(
                    "Chassis",
                    RowValues::new()
                        .set("name", "hv1")
                        .set("hostname", "host-1")
                        .set("encaps", set([named_uuid("e")]))
                        .set("other_config", map([("k", "v")])),
                    Some("c"),
                ),
                Operation::comment("petrel wire test"),
            ],
        )
        .await
        .unwrap();
    let chassis = r[1]["uuid"][1].as_str().unwrap().to_owned();
    let sbctl_name = ovn.sbctl(&["--bare", "--columns=name,hostname", "list", "Chassis"]);
    assert_eq!(sbctl_name.split_whitespace().collect::<Vec<_>>(), ["hv1", "host-1"]);
    let cu = uuid::Uuid::parse_str(&chassis).unwrap();

    // mutate + update + wait + select
    c.transact(
        SB,
        &[
            Operation::wait(
                "Chassis",
                &[Condition::uuid(cu)],
                &["hostname"],
                Until::Eq,
                vec![RowValues::new().set("hostname", "host-1")],
                0,
            ),
            Operation::mutate(
                "Chassis",
                &[Condition::eq("name", "hv1")],
                &[Mutation::new("other_config", Mutator::Insert, map([("k2", "v2")]))],
            ),
            Operation::update("Chassis", &[Condition::uuid(cu)], RowValues::new().set("hostname", "host-2")),
        ],
    )
    .await
    .unwrap();
    let sel = c
        .transact(
            SB,
            &[Operation::select(
                "Chassis",
                &[Condition::new("name", Function::Eq, json!("hv1"))],
                Some(&["hostname", "other_config", "_uuid"]),
            )],
        )
        .await
        .unwrap();
    let row = &sel[0]["rows"][0];
    assert_eq!(row["hostname"], "host-2");
    assert_eq!(row["other_config"], json!(["map", [["k", "v"], ["k2", "v2"]]]));
    assert_eq!(row["_uuid"], uuid_ref(cu));
    assert_eq!(ovn.sbctl(&["get", "Chassis", "hv1", "other_config:k2"]).trim(), "v2");

    // a failing wait aborts the whole transaction and names the operation
    let e = c
        .transact(
            SB,
            &[
                Operation::update("Chassis", &[Condition::uuid(cu)], RowValues::new().set("hostname", "nope")),
                Operation::wait(
                    "Chassis",
                    &[Condition::uuid(cu)],
                    &["hostname"],
                    Until::Eq,
                    vec![RowValues::new().set("hostname", "host-1")],
                    0,
                ),
            ],
        )
        .await
        .unwrap_err();
    match &e {
        Error::Transaction { index, error, .. } => {
            assert_eq!(*index, 1);
            assert_eq!(error, "timed out");
        }
        other => panic!("{other}"),
    }
    assert_eq!(ovn.sbctl(&["get", "Chassis", "hv1", "hostname"]).trim(), "host-2");

    // duplicate index → commit error past the last operation
    let e = c
        .transact(
            SB,
            &[
                Operation::insert("Encap", RowValues::new().set("type", "geneve").set("ip", "192.0.2.9"), Some("e")),
                Operation::insert("Chassis", RowValues::new().set("name", "hv1").set("encaps", named_uuid("e")), None),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Transaction { index: 2, error, .. } if error == "constraint violation"), "{e}");

    // delete; Encap is not a root table and goes with its chassis
    c.transact(SB, &[Operation::delete("Chassis", &[Condition::uuid(cu)])]).await.unwrap();
    assert!(ovn.sbctl(&["--bare", "list", "Chassis"]).trim().is_empty());
    assert!(ovn.sbctl(&["--bare", "list", "Encap"]).trim().is_empty());
}

#[tokio::test]
async fn wire_concurrent_requests_and_echo() {
    let ovn = standalone();
    let c = connect(&ovn).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.echo(json!([i, "x"])).await.unwrap() == json!([i, "x"])
            } else {
                c.list_dbs().await.unwrap().len() >= 2
            }
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
}

#[tokio::test]
async fn wire_monitor_cond_since_reply_shape() {
    let ovn = Ovn::start(OvnOptions { clustered_sb: true, northd: false });
    let c = connect(&ovn).await;
    let req = json!({"SB_Global": [{"columns": ["nb_cfg"]}]});
    let r = c.monitor_cond_since(SB, &json!("m1"), &req, None).await.unwrap();
    assert!(!r.found);
    assert_ne!(r.last_txn_id, petrel_control::ovsdb::connection::ZERO_TXN_ID);
    let updates: Value = serde_json::from_str(r.updates.get()).unwrap();
    assert_eq!(updates["SB_Global"].as_object().unwrap().len(), 1);
    // the same id again on a new monitor: found, and nothing to send
    let r2 = c.monitor_cond_since(SB, &json!("m2"), &req, Some(&r.last_txn_id)).await.unwrap();
    assert!(r2.found);
    assert_eq!(r2.updates.get(), "{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_tcp_remote() {
    let ovn = standalone();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ctl = ovn.dir.path().join("sb.ctl");
    let o = std::process::Command::new("ovs-appctl")
        .args(["-t", ctl.to_str().unwrap(), "ovsdb-server/add-remote", &format!("ptcp:{port}:127.0.0.1")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let remote: Remote = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    // ovsdb-server opens the listener on its next main-loop run
    common::poll_async(common::WAIT, "tcp listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    })
    .await;
    let stream = remote.connect(Duration::from_secs(5)).await.unwrap();
    let (c, _rx) = Connection::open(stream, remote.to_string(), ConnectionOptions::default());
    assert!(c.list_dbs().await.unwrap().contains(&SB.to_owned()));
    assert_eq!(c.echo(json!(["tcp"])).await.unwrap(), json!(["tcp"]));
}
