//! The peer brokers as child processes: nats-server (twice: plaintext and
//! TLS, each with JetStream on a file store), mosquitto (one plaintext and
//! one TLS listener, persistence on) and redis-server, each on a free
//! loopback port with its configuration, certificates and data in one
//! temporary directory, stopped by pid (SIGTERM, then SIGKILL) and the
//! directory removed at the end.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;

use crate::BenchError;

/// How long a broker may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The brokers, running.
pub struct Brokers {
    dir: PathBuf,
    children: Vec<(&'static str, Child)>,
    /// The CA that signed every broker's certificate.
    ca: CertificateDer<'static>,
    /// nats-server, plaintext (JetStream on).
    pub nats: u16,
    /// nats-server, TLS (JetStream on).
    pub nats_tls: u16,
    /// mosquitto, plaintext listener.
    pub mqtt: u16,
    /// mosquitto, TLS listener.
    pub mqtt_tls: u16,
    /// redis-server.
    pub redis: u16,
}

/// `name` in `PATH`, or in /usr/sbin (where Debian puts nats-server and
/// mosquitto, often outside a user's `PATH`).
fn find(name: &str, package: &str) -> Result<PathBuf, BenchError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BenchError(format!("{name} not found: install it (apt-get install {package}), or run bench/peers.sh"))
        })
}

/// A loopback port free right now (the broker binds it a moment later).
fn free_port() -> Result<u16, BenchError> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// A CA and a server certificate it signs for 127.0.0.1 and localhost, in `dir`.
fn certificates(dir: &Path) -> Result<CertificateDer<'static>, BenchError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let e = |e: rcgen::Error| BenchError(format!("certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "confab-bench peers CA");
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let key = KeyPair::generate().map_err(e)?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).map_err(e)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.pem"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    Ok(ca.der().clone())
}

fn wait_listening(name: &str, child: &mut Child, port: u16) -> Result<(), BenchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BenchError(format!(
                "{name} exited at start ({status}): see its log in the temporary directory"
            )));
        }
        if Instant::now() >= deadline {
            return Err(BenchError(format!("{name} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Brokers {
    /// Starts every broker; fails (and stops those already started) if one is missing or does not start.
    ///
    /// # Errors
    /// A broker binary is missing, or a broker did not listen in time.
    pub fn start() -> Result<Brokers, BenchError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("confab-peers-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = match certificates(&dir) {
            Ok(ca) => ca,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut b = Brokers { dir, children: Vec::new(), ca, nats: 0, nats_tls: 0, mqtt: 0, mqtt_tls: 0, redis: 0 };
        b.spawn_all()?;
        Ok(b)
    }

    fn spawn_all(&mut self) -> Result<(), BenchError> {
        let nats = find("nats-server", "nats-server")?;
        let mosquitto = find("mosquitto", "mosquitto")?;
        let redis = find("redis-server", "redis-server")?;
        let d = self.dir.clone();
        let (cert, key, cafile) = (d.join("server.pem"), d.join("server.key"), d.join("ca.pem"));

        for tls in [false, true] {
            let port = free_port()?;
            let name = if tls { "nats-tls" } else { "nats" };
            let store = d.join(format!("{name}-jetstream"));
            let mut conf = format!("listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {store:?}\n}}\n");
            if tls {
                let _ = writeln!(conf, "tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n  timeout: 5\n}}");
            }
            let conf_path = d.join(format!("{name}.conf"));
            std::fs::write(&conf_path, conf)?;
            let mut cmd = Command::new(&nats);
            cmd.arg("-c").arg(&conf_path);
            self.spawn(name, cmd, port)?;
            if tls {
                self.nats_tls = port;
            } else {
                self.nats = port;
            }
        }

        let (port, tls_port) = (free_port()?, free_port()?);
        let persistence = d.join("mosquitto-data");
        std::fs::create_dir_all(&persistence)?;
        // Root would switch to the `mosquitto` user, which cannot read this directory.
        let user = std::env::var("USER").unwrap_or_default();
        let mut conf = String::new();
        if user == "root" || user.is_empty() {
            conf.push_str("user root\n");
        }
        let _ = write!(
            conf,
            "per_listener_settings false\nallow_anonymous true\nset_tcp_nodelay true\n\
             persistence true\npersistence_location {}/\n\
             max_inflight_messages 1000\nmax_queued_messages 1000000\n\
             log_dest file {}\nlog_type error\nlog_type warning\n\
             listener {port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            persistence.display(),
            d.join("mosquitto.log").display(),
            cafile.display(),
            cert.display(),
            key.display(),
        );
        let conf_path = d.join("mosquitto.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(&mosquitto);
        cmd.arg("-c").arg(&conf_path);
        self.spawn("mosquitto", cmd, port)?;
        wait_listening("mosquitto (TLS listener)", &mut self.children.last_mut().expect("just spawned").1, tls_port)?;
        (self.mqtt, self.mqtt_tls) = (port, tls_port);

        let port = free_port()?;
        let mut cmd = Command::new(&redis);
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&d)
            .args(["--logfile", "redis.log"]);
        self.spawn("redis-server", cmd, port)?;
        self.redis = port;
        Ok(())
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command, port: u16) -> Result<(), BenchError> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.out")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| BenchError(format!("{name}: {e}")))?;
        self.children.push((name, child));
        let child = &mut self.children.last_mut().expect("just pushed").1;
        wait_listening(name, child, port)
    }

    /// A TLS client configuration trusting the brokers' CA (ring, as confab's own TLS).
    ///
    /// # Errors
    /// The CA certificate is not accepted (it always is).
    pub fn tls_client(&self) -> Result<rustls::ClientConfig, BenchError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(|e| BenchError(format!("CA: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BenchError(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// Each broker's name and pid.
    #[must_use]
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children.iter().map(|(n, c)| (*n, c.id())).collect()
    }

    /// Stops every broker by its pid (SIGTERM, SIGKILL after 5 s) and removes the directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for (_, child) in &self.children {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.children.clear();
        if std::env::var_os("CONFAB_PEERS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.shutdown();
        }
    }
}
