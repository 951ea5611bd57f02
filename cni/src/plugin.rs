//! The commands: ADD, DEL, CHECK, STATUS, GC, VERSION.
//!
//! ADD records what it is about to make (the state file) before making it,
//! and undoes all of it if a step fails, so no port, address or LSP
//! outlives a failed ADD, and GC can find everything a crash left behind.
//! DEL succeeds when something is already gone (no port, no petreld, a
//! second DEL); it keeps the state file when a step really failed, so a
//! retry or GC finishes the job.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use petrel_dataplane::ctl::client::{Client, ClientError};
use petrel_dataplane::ctl::proto::{ErrorCode, PortInfo, ShowReply};
use serde_json::Value;

use crate::attach::{self, Paths, State};
use crate::config::{self, NetConf, VhostMode};
use crate::ipam::Delegate;
use crate::ovn::{self, Nb};
use crate::spec::{code, version_tuple, CniError, CniResult, Command, Env, Interface, IpConfig};

/// What the plugin needs from petreld (the control socket client; a fake in tests).
pub trait Dataplane {
    /// Adds a port (petreld's `--port` syntax).
    ///
    /// # Errors
    /// As the client.
    fn add_port(&mut self, spec: &str) -> Result<PortInfo, ClientError>;
    /// Removes a port.
    ///
    /// # Errors
    /// As the client (`NotFound` if missing).
    fn del_port(&mut self, name: &str) -> Result<PortInfo, ClientError>;
    /// Lists ports.
    ///
    /// # Errors
    /// As the client.
    fn show(&mut self) -> Result<ShowReply, ClientError>;
}

impl Dataplane for Client {
    fn add_port(&mut self, spec: &str) -> Result<PortInfo, ClientError> {
        Client::add_port(self, spec)
    }
    fn del_port(&mut self, name: &str) -> Result<PortInfo, ClientError> {
        Client::del_port(self, name)
    }
    fn show(&mut self) -> Result<ShowReply, ClientError> {
        Client::show(self)
    }
}

/// Opens a connection to petreld's control socket.
pub type Connector = dyn Fn(&Path) -> Result<Box<dyn Dataplane>, ClientError>;

/// The real connector.
///
/// # Errors
/// As [`Client::connect_timeout`].
pub fn connect_petreld(path: &Path) -> Result<Box<dyn Dataplane>, ClientError> {
    let name = concat!("petrel-cni ", env!("CARGO_PKG_VERSION"));
    Ok(Box::new(Client::connect_timeout(path, name, Duration::from_secs(20))?))
}

/// How long ADD waits for petreld's socket file to appear (server mode).
const SOCKET_WAIT: Duration = Duration::from_secs(5);

fn unreachable(path: &Path, e: &ClientError) -> CniError {
    CniError::new(
        code::TRY_AGAIN,
        format!(
            "petreld is not reachable at {} (\"controlSocket\"): start petreld there, or point controlSocket at its \
             --control-socket",
            path.display()
        ),
    )
    .details(e)
}

fn dataplane_error(what: &str, path: &Path, e: ClientError) -> CniError {
    if e.is_unreachable() {
        return unreachable(path, &e);
    }
    CniError::new(code::DATAPLANE_REFUSED, format!("petreld refused to {what}")).details(e)
}

/// Runs one invocation: the JSON to print on success (`None`: print nothing).
///
/// # Errors
/// The CNI error to print.
pub fn run(env: &Env, stdin: &[u8], connect: &Connector) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(crate::spec::version_json()));
    }
    let conf = NetConf::parse(stdin)?;
    let raw: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODE, "the network configuration is not JSON").details(e))?;
    let p = Plugin { env, conf: &conf, raw: &raw, connect };
    match env.command {
        Command::Add => p.add().map(Some),
        Command::Del => p.del().map(|()| None),
        Command::Check => p.check().map(|()| None),
        Command::Status => p.status().map(|()| None),
        Command::Gc => p.gc().map(|()| None),
        Command::Version => Ok(Some(crate::spec::version_json())),
    }
}

struct Plugin<'a> {
    env: &'a Env,
    conf: &'a NetConf,
    raw: &'a Value,
    connect: &'a Connector,
}

impl Plugin<'_> {
    fn ids(&self) -> Result<(&str, &str), CniError> {
        let cid = self.env.require(&self.env.container_id, "CNI_CONTAINERID")?;
        let ifname = self.env.require(&self.env.ifname, "CNI_IFNAME")?;
        if !attach::valid_ifname(ifname) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_IFNAME={ifname:?} is not an interface name (1 to 15 bytes, no '/', ':', ',', '=' or spaces)"
                ),
            ));
        }
        Ok((cid, ifname))
    }

    fn nb(&self) -> Option<Nb> {
        self.conf.nb_db.as_ref().map(|db| Nb { nbctl: self.conf.nbctl.clone(), db: db.clone() })
    }

    fn logical_port(&self) -> Result<String, CniError> {
        let (Some(pod), Some(ns)) = (self.env.arg("K8S_POD_NAME"), self.env.arg("K8S_POD_NAMESPACE")) else {
            return Err(CniError::new(
                code::INVALID_ENV,
                "CNI_ARGS has no K8S_POD_NAME and K8S_POD_NAMESPACE: the logical switch port is named \
                 <pod>.<namespace> after them; the runtime (or Multus) passes them, a test must set them",
            ));
        };
        let lsp = self.conf.logical_port(pod, ns);
        if lsp.contains([',', '=', ';', '"', ' ']) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("logical port name {lsp:?} has a character petreld's port syntax cannot carry"),
            ));
        }
        Ok(lsp)
    }

    fn shared_dir(&self, cid: &str, ifname: &str) -> Result<Option<PathBuf>, CniError> {
        let Some(t) = &self.conf.shared_dir else { return Ok(None) };
        let look = |k: &str| match k {
            "containerId" => Some(cid.to_owned()),
            "ifName" => Some(ifname.to_owned()),
            _ => self.env.arg(k).map(str::to_owned),
        };
        Ok(Some(PathBuf::from(config::expand(t, look)?)))
    }

    fn dial(&self) -> Result<Box<dyn Dataplane>, CniError> {
        (self.connect)(&self.conf.control_socket).map_err(|e| unreachable(&self.conf.control_socket, &e))
    }

    /// The `CNI_*` variables a delegate gets: ours, then `over` on top
    /// (GC tears down other attachments than the one in the environment).
    fn delegate_env(&self, over: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let e = self.env;
        let args: Vec<String> = e.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path = std::env::join_paths(&e.path).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let mut v: Vec<(&'static str, String)> = vec![
            ("CNI_CONTAINERID", e.container_id.clone().unwrap_or_default()),
            ("CNI_NETNS", e.netns.clone().unwrap_or_default()),
            ("CNI_IFNAME", e.ifname.clone().unwrap_or_default()),
            ("CNI_ARGS", args.join(";")),
            ("CNI_PATH", path),
        ];
        for (k, val) in over {
            v.retain(|(x, _)| x != k);
            v.push((k, val.clone()));
        }
        v
    }

    fn ipam(&self) -> Result<Option<Delegate>, CniError> {
        self.conf.ipam_type().map(|t| Delegate::find(t, &self.env.path)).transpose()
    }

    // ---- ADD ----

    fn add(&self) -> Result<Value, CniError> {
        let (cid, ifname) = self.ids()?;
        let netns = self.env.require(&self.env.netns, "CNI_NETNS")?;
        let lsp = self.logical_port()?;
        let paths = Paths::new(self.conf, cid, ifname)?;
        let shared = self.shared_dir(cid, ifname)?;
        let ipam = self.ipam()?;
        let mut dp = self.dial()?;
        // A previous ADD of this attachment that DEL never undid.
        if let Some(old) = attach::load_state(&paths.state)? {
            self.teardown(&old, Some(&mut *dp), &[])?;
        }
        let mut state = State {
            network: self.conf.name.clone(),
            container_id: cid.to_owned(),
            ifname: ifname.to_owned(),
            netns: Some(netns.to_owned()),
            port: paths.port(),
            control_socket: self.conf.control_socket.clone(),
            logical_port: lsp,
            created_lsp: false,
            nb_db: self.conf.nb_db.clone(),
            entry: paths.entry.clone(),
            shared_dir: shared,
            socket: paths.socket.clone(),
            mode: self.conf.vhost_mode.as_str().to_owned(),
            config_data: paths.config_data.clone(),
            result: None,
        };
        attach::save_state(&paths.state, &state)?;
        match self.add_steps(&mut *dp, &mut state, &paths, ipam.as_ref()) {
            Ok(r) => Ok(r.to_json(&self.conf.cni_version)),
            Err(e) => {
                if let Err(u) = self.teardown(&state, Some(&mut *dp), &[]) {
                    eprintln!("petrel-cni: undoing the failed ADD: {u}");
                }
                Err(e)
            }
        }
    }

    fn add_steps(
        &self,
        dp: &mut dyn Dataplane,
        state: &mut State,
        paths: &Paths,
        ipam: Option<&Delegate>,
    ) -> Result<CniResult, CniError> {
        let c = self.conf;
        let owner = c.owner()?;
        let (cid, ifname) = (state.container_id.clone(), state.ifname.clone());
        attach::make_entry(&c.socket_dir, &paths.entry, state.shared_dir.as_deref(), owner)?;
        // A port of this name left by a crashed ADD.
        match dp.del_port(&state.port) {
            Err(ClientError::Remote(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(dataplane_error("remove a stale port", &c.control_socket, e)),
            Ok(_) => {}
        }

        let nb = self.nb();
        let existing = nb.as_ref().map(|nb| nb.port(&state.logical_port)).transpose()?.flatten();
        let ours = existing.as_ref().is_some_and(|l| l.owner.as_deref() == Some(paths.key.as_str()));
        let create = c.create_port && (existing.is_none() || ours);
        let lsp_addr = existing.as_ref().and_then(ovn::port_addresses);
        let mut mac = c.runtime_config.mac.clone().or_else(|| lsp_addr.as_ref().map(|a| a.0.clone()));
        let (mut ips, mut routes, mut dns) = (Vec::new(), Vec::new(), Value::Null);

        if let Some(d) = ipam {
            let r = d.add(self.raw, &self.delegate_env(&[]))?;
            ips = r.ips.into_iter().map(|i| IpConfig { interface: Some(0), ..i }).collect();
            routes = r.routes;
            dns = r.dns;
        }
        let mac_now = mac.clone().unwrap_or_else(|| attach::generated_mac(&cid, &ifname));
        if create {
            let sw = c.logical_switch.as_deref().unwrap_or_default();
            let addresses = if ipam.is_some() {
                std::iter::once(mac_now.clone())
                    .chain(ips.iter().map(|i| host(&i.address)))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else if let Some(m) = &c.runtime_config.mac {
                format!("{m} dynamic")
            } else {
                "dynamic".to_owned()
            };
            state.created_lsp = true;
            attach::save_state(&paths.state, state)?;
            if let Some(nb) = &nb {
                nb.create(sw, &state.logical_port, &addresses, &paths.key)?;
            }
        }
        if ipam.is_none() {
            if let Some(nb) = &nb {
                // Addresses from the LSP: static, or what ovn-northd assigned.
                let lsp = nb.port(&state.logical_port)?.ok_or_else(|| {
                    CniError::new(
                        code::OVN_NB,
                        format!(
                            "logical switch port {} does not exist in the NB: create it (ovn-nbctl lsp-add SWITCH {}), \
                             set \"createPort\": true with \"logicalSwitch\", or give an \"ipam\" section",
                            state.logical_port, state.logical_port
                        ),
                    )
                })?;
                let (m, addrs) = ovn::port_addresses(&lsp).ok_or_else(|| {
                    CniError::new(
                        code::OVN_NB,
                        format!(
                            "logical switch port {} has no address with a MAC (addresses {:?}, dynamic_addresses {:?}): \
                             set one (ovn-nbctl lsp-set-addresses {} \"MAC IP\"), or for \"dynamic\" give the switch \
                             other_config:subnet or other_config:mac_only=true",
                            state.logical_port, lsp.addresses, lsp.dynamic_addresses, state.logical_port
                        ),
                    )
                })?;
                ips = ovn::as_ip_configs(&addrs, nb.prefixes(&state.logical_port)?);
                mac = Some(m);
            }
        }
        let mac = mac.unwrap_or(mac_now);
        if create && c.port_security {
            if let Some(nb) = &nb {
                let ps = std::iter::once(mac.clone())
                    .chain(ips.iter().map(|i| host(&i.address)))
                    .collect::<Vec<_>>()
                    .join(" ");
                nb.set_port_security(&state.logical_port, &ps)?;
            }
        }

        let spec = format!(
            "{}=vhost-user,path={},mode={},queues={},iface-id={}",
            state.port,
            paths.socket.display(),
            c.vhost_mode.as_str(),
            c.queues,
            state.logical_port
        );
        dp.add_port(&spec).map_err(|e| dataplane_error(&format!("add port {spec:?}"), &c.control_socket, e))?;
        if c.vhost_mode == VhostMode::Server {
            let t0 = Instant::now();
            while !paths.socket.exists() {
                if t0.elapsed() > SOCKET_WAIT {
                    return Err(CniError::new(
                        code::DATAPLANE_REFUSED,
                        format!(
                            "petreld added port {} but its socket {} did not appear",
                            state.port,
                            paths.socket.display()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            attach::secure_socket(&paths.socket, c.mode()?, owner)?;
        }

        let result = CniResult {
            interfaces: vec![Interface {
                name: ifname.clone(),
                mac,
                mtu: Some(c.mtu),
                sandbox: state.netns.clone(),
                socket_path: Some(paths.socket.display().to_string()),
            }],
            ips,
            routes,
            dns,
        };
        let data = attach::configuration_data(c, &cid, &ifname, &paths.socket_name, &result);
        let bytes = serde_json::to_vec_pretty(&data)
            .map_err(|e| CniError::new(code::IO_FAILURE, "cannot encode configuration data").details(e))?;
        attach::write_atomic(&paths.config_data, &bytes, 0o644)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&paths.config_data, Some(uid), Some(gid)).map_err(|e| {
                CniError::new(code::IO_FAILURE, format!("cannot chown {}", paths.config_data.display())).details(e)
            })?;
        }
        state.result = Some(result.clone());
        attach::save_state(&paths.state, state)?;

        if c.bind_timeout > 0.0 {
            let t0 = Instant::now();
            loop {
                let bound = dp
                    .show()
                    .map_err(|e| dataplane_error("show its ports", &c.control_socket, e))?
                    .ports
                    .iter()
                    .any(|p| p.name == state.port && p.logical.is_some());
                if bound {
                    break;
                }
                if t0.elapsed().as_secs_f64() > c.bind_timeout {
                    return Err(not_bound(state, c.bind_timeout));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(result)
    }

    // ---- DEL ----

    fn del(&self) -> Result<(), CniError> {
        let (cid, ifname) = self.ids()?;
        let paths = Paths::new(self.conf, cid, ifname)?;
        let state = match attach::load_state(&paths.state)? {
            Some(s) => s,
            // No record: remove whatever the names say (DEL is idempotent).
            None => State {
                network: self.conf.name.clone(),
                container_id: cid.to_owned(),
                ifname: ifname.to_owned(),
                netns: self.env.netns.clone(),
                port: paths.port(),
                control_socket: self.conf.control_socket.clone(),
                logical_port: self.logical_port().unwrap_or_default(),
                created_lsp: self.conf.create_port,
                nb_db: self.conf.nb_db.clone(),
                entry: paths.entry.clone(),
                shared_dir: None,
                socket: paths.socket.clone(),
                mode: self.conf.vhost_mode.as_str().to_owned(),
                config_data: paths.config_data.clone(),
                result: None,
            },
        };
        let mut dp = (self.connect)(&state.control_socket).ok();
        self.teardown(&state, dp.as_deref_mut(), &[])
    }

    /// Undoes an attachment: petreld port, LSP (if ours), address, files.
    /// Carries on past failures and reports the first; the state file is
    /// removed only if everything went.
    fn teardown(
        &self,
        s: &State,
        dp: Option<&mut (dyn Dataplane + 'static)>,
        ipam_env: &[(&'static str, String)],
    ) -> Result<(), CniError> {
        let mut first: Option<CniError> = None;
        let mut note = |e: CniError| {
            eprintln!("petrel-cni: {e}");
            first.get_or_insert(e);
        };
        if let Some(dp) = dp {
            match dp.del_port(&s.port) {
                Ok(_) => {}
                Err(ClientError::Remote(e)) if e.code == ErrorCode::NotFound => {}
                // petreld is gone, and its ports with it.
                Err(e) if e.is_unreachable() => {}
                Err(e) => note(dataplane_error(&format!("remove port {}", s.port), &s.control_socket, e)),
            }
        }
        if s.created_lsp && !s.logical_port.is_empty() {
            if let Some(db) = &s.nb_db {
                let nb = Nb { nbctl: self.conf.nbctl.clone(), db: db.clone() };
                if let Err(e) = nb.delete_if_owned(&s.logical_port, &attach::key(&s.container_id, &s.ifname)) {
                    note(e);
                }
            }
        }
        match self.ipam() {
            Ok(Some(d)) => {
                if let Err(e) = d.exec("DEL", self.raw, None, &self.delegate_env(ipam_env)) {
                    note(e);
                }
            }
            Ok(None) => {}
            // DEL must not fail because the IPAM plugin was uninstalled.
            Err(e) => eprintln!("petrel-cni: not releasing the address: {e}"),
        }
        for r in [attach::remove_file(&s.socket), attach::remove_file(&s.config_data), attach::remove_entry(&s.entry)] {
            if let Err(e) = r {
                note(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => attach::remove_file(
                &self.conf.state_dir.join(format!("{}.json", attach::key(&s.container_id, &s.ifname))),
            ),
        }
    }

    // ---- CHECK ----

    fn check(&self) -> Result<(), CniError> {
        if version_tuple(&self.conf.cni_version) < (0, 4, 0) {
            return Err(CniError::new(code::INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or newer"));
        }
        let (cid, ifname) = self.ids()?;
        let paths = Paths::new(self.conf, cid, ifname)?;
        let s = attach::load_state(&paths.state)?.ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "petrel-cni has no attachment {cid}/{ifname} on network {} (ADD did not run, or DEL did)",
                    self.conf.name
                ),
            )
        })?;
        let mut dp = self.dial()?;
        let show = dp.show().map_err(|e| dataplane_error("show its ports", &s.control_socket, e))?;
        let port = show.ports.iter().find(|p| p.name == s.port).ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!("petreld has no port {} for {cid}/{ifname}: did petreld restart? Recreate the pod", s.port),
            )
        })?;
        if port.iface_id.as_deref() != Some(s.logical_port.as_str()) {
            return Err(CniError::new(
                code::DATAPLANE_REFUSED,
                format!("petreld port {} has iface-id {:?}, not {}", s.port, port.iface_id, s.logical_port),
            ));
        }
        if port.logical.is_none() {
            return Err(not_bound(&s, 0.0));
        }
        if attach::mode_of(&s.mode) == VhostMode::Server && !s.socket.exists() {
            return Err(CniError::new(code::IO_FAILURE, format!("the socket {} is gone", s.socket.display())));
        }
        let ours = s.result.as_ref().and_then(|r| r.interfaces.first());
        if let (Some(prev), Some(ours)) = (&self.conf.prev_result, ours) {
            let prev_mac = prev
                .get("interfaces")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|i| i.get("name").and_then(Value::as_str) == Some(ifname)))
                .and_then(|i| i.get("mac"))
                .and_then(Value::as_str);
            if prev_mac.is_some_and(|m| !m.eq_ignore_ascii_case(&ours.mac)) {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("prevResult says {ifname} has MAC {prev_mac:?}, the attachment has {}", ours.mac),
                ));
            }
        }
        if let Some(d) = self.ipam()? {
            if d.knows("CHECK") {
                let version = d.version_for(&self.conf.cni_version)?;
                let prev = s.result.as_ref().map(|r| r.to_json(&version));
                d.exec("CHECK", self.raw, prev, &self.delegate_env(&[]))?;
            }
        }
        Ok(())
    }

    // ---- STATUS ----

    fn status(&self) -> Result<(), CniError> {
        let na = |m: String, e: &dyn std::fmt::Display| CniError::new(code::NOT_AVAILABLE, m).details(e);
        (self.connect)(&self.conf.control_socket).map_err(|e| {
            na(
                format!(
                    "petreld is not reachable at {}: start it (the petrel DaemonSet)",
                    self.conf.control_socket.display()
                ),
                &e,
            )
        })?;
        if self.conf.create_port {
            if let Some(nb) = self.nb() {
                nb.run(&["--bare", "--columns=_uuid", "list", "NB_Global"])
                    .map_err(|e| na(format!("the OVN Northbound {} is not reachable", nb.db), &e))?;
            }
        }
        if let Some(d) = self.ipam().map_err(|e| na("the IPAM plugin is not usable".into(), &e))? {
            if d.knows("STATUS") {
                d.exec("STATUS", self.raw, None, &self.delegate_env(&[]))?;
            }
        }
        Ok(())
    }

    // ---- GC ----

    fn gc(&self) -> Result<(), CniError> {
        let valid = self.conf.valid_attachments.clone().unwrap_or_default();
        let keep: Vec<String> = valid.iter().map(|v| attach::key(&v.container_id, &v.ifname)).collect();
        let mut dp = (self.connect)(&self.conf.control_socket).ok();
        let mut first = None;
        let states = attach::all_states(&self.conf.state_dir);
        for (_, s) in states.iter().filter(|(_, s)| s.network == self.conf.name) {
            if keep.contains(&attach::key(&s.container_id, &s.ifname)) {
                continue;
            }
            let env = [
                ("CNI_CONTAINERID", s.container_id.clone()),
                ("CNI_IFNAME", s.ifname.clone()),
                ("CNI_NETNS", s.netns.clone().unwrap_or_default()),
            ];
            if let Err(e) = self.teardown(s, dp.as_deref_mut(), &env) {
                first.get_or_insert(e);
            }
        }
        // petreld ports of attachments nobody has a record of (ADD records
        // first, so these are leaks of any network).
        if let Some(dp) = dp.as_deref_mut() {
            let known: Vec<String> =
                attach::all_states(&self.conf.state_dir).iter().map(|(_, s)| s.port.clone()).collect();
            if let Ok(show) = dp.show() {
                for p in show.ports.iter().filter(|p| p.name.starts_with(attach::PORT_PREFIX)) {
                    if !known.contains(&p.name) && !keep.iter().any(|k| p.name.ends_with(k.as_str())) {
                        if let Err(e) = dp.del_port(&p.name) {
                            eprintln!("petrel-cni: GC: removing leaked port {}: {e}", p.name);
                        }
                    }
                }
            }
        }
        if let Some(d) = self.ipam()? {
            if d.knows("GC") {
                d.exec("GC", self.raw, None, &self.delegate_env(&[]))?;
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn not_bound(s: &State, waited: f64) -> CniError {
    let when = if waited > 0.0 { format!(" within {waited} s") } else { String::new() };
    CniError::new(
        code::NOT_BOUND,
        format!(
            "petreld port {} is not bound to logical port {}{when}: is petrel-ovn running against petreld's control \
             socket, and does {} exist on a logical switch (ovn-nbctl lsp-list)?",
            s.port, s.logical_port, s.logical_port
        ),
    )
}

/// `10.0.0.2/24` -> `10.0.0.2`.
fn host(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or(cidr).to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use petrel_dataplane::ctl::proto::{ErrorReply, LogicalPortInfo, PortStats};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// petreld as the plugin sees it: ports by name; server-mode sockets
    /// appear as files; `bound` ports get a logical binding.
    #[derive(Default)]
    struct Fake {
        ports: Vec<PortInfo>,
        refuse: bool,
        bind: bool,
    }

    struct Conn(Rc<RefCell<Fake>>);

    impl Dataplane for Conn {
        fn add_port(&mut self, spec: &str) -> Result<PortInfo, ClientError> {
            let mut f = self.0.borrow_mut();
            if f.refuse {
                return Err(ClientError::Remote(ErrorReply::rejected("no more ports")));
            }
            let (name, rest) = spec.split_once('=').unwrap();
            let kv: HashMap<&str, &str> = rest.split(',').filter_map(|x| x.split_once('=')).collect();
            if kv["mode"] == "server" {
                std::fs::write(kv["path"], b"").unwrap();
            }
            let p = PortInfo {
                index: u16::try_from(f.ports.len()).unwrap(),
                name: name.to_owned(),
                kind: "vhost-user".into(),
                state: "waiting".into(),
                iface_id: Some(kv["iface-id"].to_owned()),
                logical: f.bind.then(|| LogicalPortInfo {
                    datapath: 1,
                    datapath_name: "sw0".into(),
                    port: 1,
                    port_name: None,
                }),
                stats: PortStats::default(),
            };
            f.ports.push(p.clone());
            Ok(p)
        }
        fn del_port(&mut self, name: &str) -> Result<PortInfo, ClientError> {
            let mut f = self.0.borrow_mut();
            let i = f.ports.iter().position(|p| p.name == name).ok_or_else(|| ErrorReply::not_found("no such port"))?;
            Ok(f.ports.remove(i))
        }
        fn show(&mut self) -> Result<ShowReply, ClientError> {
            let f = self.0.borrow();
            Ok(ShowReply {
                uplinks: Vec::new(),
                tunnels: Vec::new(),
                server: "fake".into(),
                uptime_secs: 0.0,
                generation: 1,
                n_datapaths: 1,
                n_rules: 0,
                n_pmds: 1,
                ports: f.ports.clone(),
            })
        }
    }

    struct World {
        dir: tempfile::TempDir,
        petreld: Rc<RefCell<Fake>>,
        up: bool,
    }

    impl World {
        fn new() -> Self {
            World { dir: tempfile::tempdir().unwrap(), petreld: Rc::default(), up: true }
        }
        fn conf(&self, extra: &str) -> String {
            let d = self.dir.path().display();
            format!(
                r#"{{"cniVersion":"1.1.0","name":"net","type":"petrel","socketDir":"{d}/s","stateDir":"{d}/state"{extra}}}"#
            )
        }
        fn call(&self, cmd: &str, cid: &str, conf: &str, args: &str) -> Result<Option<Value>, CniError> {
            let vars: HashMap<&str, String> = [
                ("CNI_COMMAND", cmd.to_owned()),
                ("CNI_CONTAINERID", cid.to_owned()),
                ("CNI_NETNS", "/var/run/netns/pod".to_owned()),
                ("CNI_IFNAME", "net1".to_owned()),
                ("CNI_ARGS", args.to_owned()),
                ("CNI_PATH", self.dir.path().join("bin").display().to_string()),
            ]
            .into_iter()
            .collect();
            let env = Env::from_vars(|k| vars.get(k).cloned()).unwrap();
            let fake = Rc::clone(&self.petreld);
            let up = self.up;
            let connect = move |p: &Path| -> Result<Box<dyn Dataplane>, ClientError> {
                if up {
                    Ok(Box::new(Conn(Rc::clone(&fake))))
                } else {
                    Err(ClientError::Connect {
                        path: p.to_owned(),
                        source: std::io::ErrorKind::NotFound.into(),
                        hint: "no socket there",
                    })
                }
            };
            run(&env, conf.as_bytes(), &connect)
        }
        fn n_files(&self, sub: &str) -> usize {
            std::fs::read_dir(self.dir.path().join(sub)).map(|d| d.count()).unwrap_or(0)
        }
        /// A fake IPAM plugin logging its commands to `ipam.log`.
        fn fake_ipam(&self) {
            let bin = self.dir.path().join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let log = self.dir.path().join("ipam.log");
            let script = format!(
                "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID $(head -c 200 | tr -d '\\n' | sed 's/.*cniVersion\":\"\\([^\"]*\\).*/\\1/')\" >> {}\n\
                 case $CNI_COMMAND in\n VERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}}';;\n \
                 ADD) echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.9.0.5/24\",\"gateway\":\"10.9.0.1\"}}]}}';;\nesac\n",
                log.display()
            );
            let p = bin.join("fake-ipam");
            std::fs::write(&p, script).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        fn ipam_log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("ipam.log")).unwrap_or_default()
        }
    }

    const POD: &str = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod1";

    #[test]
    fn add_check_del_lifecycle() {
        let w = World::new();
        let conf = w.conf("");
        let r = w.call("ADD", "c1", &conf, POD).unwrap().unwrap();
        let i = &r["interfaces"][0];
        assert_eq!(i["name"], "net1");
        assert_eq!(i["mtu"], 1500);
        assert_eq!(i["sandbox"], "/var/run/netns/pod");
        let sock = PathBuf::from(i["socketPath"].as_str().unwrap());
        assert!(sock.exists() && sock.as_os_str().len() < 108);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o660);
        let port = w.petreld.borrow().ports[0].clone();
        assert_eq!(port.iface_id.as_deref(), Some("pod1.default"));
        assert!(port.name.starts_with("cni-"));
        // The pod's configuration data sits beside the socket.
        let cd = std::fs::read_dir(sock.parent().unwrap())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("configData-c1-net1"))
            .unwrap();
        let cd: Value = serde_json::from_slice(&std::fs::read(cd.path()).unwrap()).unwrap();
        assert_eq!(cd["config"]["vhost"]["socketfile"], "net1.sock");
        assert_eq!(cd["ipResult"]["interfaces"][0]["mac"], i["mac"]);

        // Not bound yet (no petrel-ovn): CHECK says so, with its code.
        let e = w.call("CHECK", "c1", &conf, POD).unwrap_err();
        assert_eq!(e.code, code::NOT_BOUND, "{e}");
        assert!(e.msg.contains("petrel-ovn"), "{e}");
        w.petreld.borrow_mut().ports[0].logical =
            Some(LogicalPortInfo { datapath: 1, datapath_name: "sw0".into(), port: 1, port_name: None });
        let with_prev = w.conf(&format!(r#","prevResult":{r}"#));
        assert_eq!(w.call("CHECK", "c1", &with_prev, POD).unwrap(), None);
        // A prevResult with another MAC fails CHECK.
        let mut other = r.clone();
        other["interfaces"][0]["mac"] = Value::String("02:00:00:00:00:99".into());
        let e = w.call("CHECK", "c1", &w.conf(&format!(r#","prevResult":{other}"#)), POD).unwrap_err();
        assert!(e.msg.contains("MAC"), "{e}");

        assert_eq!(w.call("DEL", "c1", &conf, POD).unwrap(), None);
        assert!(w.petreld.borrow().ports.is_empty());
        assert!(!sock.exists());
        assert_eq!(w.n_files("s"), 0, "the attachment's directory is gone");
        assert_eq!(w.n_files("state"), 0, "the state file is gone");
        // DEL again, and DEL without petreld: still success.
        assert_eq!(w.call("DEL", "c1", &conf, POD).unwrap(), None);
        let down = World { up: false, ..World::new() };
        assert_eq!(down.call("DEL", "c1", &down.conf(""), "").unwrap(), None);
        // CHECK after DEL: the container is unknown.
        assert_eq!(w.call("CHECK", "c1", &conf, POD).unwrap_err().code, code::UNKNOWN_CONTAINER);
    }

    #[test]
    fn add_without_petreld_is_try_again_and_leaves_nothing() {
        let w = World { up: false, ..World::new() };
        let e = w.call("ADD", "c1", &w.conf(""), POD).unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN);
        assert!(e.msg.contains("controlSocket"), "{e}");
        assert_eq!(w.n_files("state") + w.n_files("s"), 0);
        assert_eq!(w.call("STATUS", "", &w.conf(""), "").unwrap_err().code, code::NOT_AVAILABLE);
    }

    #[test]
    fn refused_port_undoes_the_address_and_the_files() {
        let w = World::new();
        w.fake_ipam();
        w.petreld.borrow_mut().refuse = true;
        let conf = w.conf(r#","ipam":{"type":"fake-ipam"}"#);
        let e = w.call("ADD", "c1", &conf, POD).unwrap_err();
        assert_eq!(e.code, code::DATAPLANE_REFUSED, "{e}");
        let log = w.ipam_log();
        assert!(
            log.contains("ADD c1 1.0.0") && log.contains("DEL c1"),
            "IPAM spoken to in 1.0.0, then released: {log}"
        );
        assert_eq!(w.n_files("state") + w.n_files("s"), 0);
    }

    #[test]
    fn ipam_addresses_are_in_the_result() {
        let w = World::new();
        w.fake_ipam();
        let conf = w.conf(r#","ipam":{"type":"fake-ipam"},"runtimeConfig":{"mac":"02:00:00:00:00:07"}"#);
        let r = w.call("ADD", "c1", &conf, POD).unwrap().unwrap();
        assert_eq!(r["ips"][0]["address"], "10.9.0.5/24");
        assert_eq!(r["ips"][0]["gateway"], "10.9.0.1");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:07");
        w.call("DEL", "c1", &conf, POD).unwrap();
        assert!(w.ipam_log().contains("DEL c1"));
    }

    #[test]
    fn missing_pod_identity_or_ifname() {
        let w = World::new();
        let e = w.call("ADD", "c1", &w.conf(""), "IgnoreUnknown=1").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("K8S_POD_NAME"), "{e}");
        let e = w.call("ADD", "", &w.conf(""), POD).unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"), "{e}");
        let e = w.call("ADD", "c1", &w.conf(r#","ipam":{"type":"absent-ipam"}"#), POD).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("absent-ipam"), "{e}");
        let e = w.call("ADD", "c1", &w.conf(r#","sharedDir":"/x/{K8S_POD_UID}""#), POD).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("K8S_POD_UID"), "{e}");
    }

    #[test]
    fn gc_removes_what_is_not_valid() {
        let w = World::new();
        let conf = w.conf("");
        for c in ["c1", "c2", "c3"] {
            w.call("ADD", c, &conf, POD).unwrap();
        }
        // A leaked port nobody has a record of.
        w.petreld.borrow_mut().ports.push(PortInfo {
            index: 9,
            name: "cni-000000000000".into(),
            kind: "vhost-user".into(),
            state: "waiting".into(),
            iface_id: None,
            logical: None,
            stats: PortStats::default(),
        });
        let gc = w.conf(r#","cni.dev/valid-attachments":[{"containerID":"c2","ifname":"net1"}]"#);
        assert_eq!(w.call("GC", "", &gc, "").unwrap(), None);
        let ports: Vec<String> = w.petreld.borrow().ports.iter().map(|p| p.name.clone()).collect();
        assert_eq!(ports, vec![Paths::new(&NetConf::parse(conf.as_bytes()).unwrap(), "c2", "net1").unwrap().port()]);
        assert_eq!(w.n_files("state"), 1);
        assert_eq!(w.n_files("s"), 1);
        // Another network's GC leaves this network's attachments alone.
        let other =
            gc.replace(r#""name":"net""#, r#""name":"other""#).replace(r#"{"containerID":"c2","ifname":"net1"}"#, "");
        w.call("GC", "", &other, "").unwrap();
        assert_eq!(w.petreld.borrow().ports.len(), 1);
    }

    #[test]
    fn repeated_add_replaces_the_attachment() {
        let w = World::new();
        let conf = w.conf("");
        let a = w.call("ADD", "c1", &conf, POD).unwrap().unwrap();
        let b = w.call("ADD", "c1", &conf, POD).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(w.petreld.borrow().ports.len(), 1);
    }

    #[test]
    fn version_needs_no_stdin() {
        let env = Env::from_vars(|k| (k == "CNI_COMMAND").then(|| "VERSION".to_owned())).unwrap();
        let v =
            run(&env, b"", &|_: &Path| -> Result<Box<dyn Dataplane>, ClientError> { unreachable!() }).unwrap().unwrap();
        assert_eq!(v["supportedVersions"][4], "1.1.0");
    }
}
