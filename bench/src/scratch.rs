//! A scratch database for one run on the PostgreSQL store: created on the
//! server of the given URL, dropped when the run ends.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::BenchError;

/// A database of its own on a PostgreSQL server, dropped on drop.
pub(crate) struct ScratchDb {
    /// The server's URL, for the drop.
    admin: postgres::Config,
    name: String,
    /// A connection string for the scratch database.
    pub(crate) url: String,
}

impl ScratchDb {
    /// Creates `confab_bench_<pid>_<nanos>` on the server of `url`.
    pub(crate) fn create(url: &str) -> Result<ScratchDb, BenchError> {
        let admin: postgres::Config = url.parse().map_err(|e| BenchError(format!("--postgres-url: {e}")))?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("confab_bench_{}_{nanos}", std::process::id());
        let mut client = admin.connect(postgres::NoTls).map_err(|e| BenchError(format!("PostgreSQL: {e}")))?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| BenchError(format!("create the scratch database: {e}")))?;
        let mut pairs = Vec::new();
        for host in admin.get_hosts() {
            if let postgres::config::Host::Tcp(h) = host {
                pairs.push(format!("host={h}"));
            }
        }
        if let Some(port) = admin.get_ports().first() {
            pairs.push(format!("port={port}"));
        }
        if let Some(user) = admin.get_user() {
            pairs.push(format!("user={user}"));
        }
        if let Some(password) = admin.get_password() {
            let password = String::from_utf8_lossy(password).replace('\\', "\\\\").replace('\'', "\\'");
            pairs.push(format!("password='{password}'"));
        }
        pairs.push(format!("dbname={name}"));
        Ok(ScratchDb { admin, name, url: pairs.join(" ") })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Ok(mut client) = self.admin.connect(postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}
