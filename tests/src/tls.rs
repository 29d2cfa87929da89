//! TLS peers on loopback: a certificate authority of the test's own, made with openssl,
//! and the server side of a TLS connection with a certificate it signed.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A certificate authority and a certificate for `127.0.0.1` it signed, in a temporary
/// directory. Point the gateway (or git) at [`TestCa::ca_file`] to trust it.
pub struct TestCa {
    dir: tempfile::TempDir,
    config: Arc<ServerConfig>,
}

impl TestCa {
    /// A new authority; `name` is its common name (no spaces).
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(
            dir.path(),
            &format!("req -x509 -days 2 {ec} -subj /CN={name} -keyout ca.key -out ca.pem"),
        );
        openssl(
            dir.path(),
            &format!("req -new {ec} -subj /CN=127.0.0.1 -keyout server.key -out server.csr"),
        );
        std::fs::write(dir.path().join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(
            dir.path(),
            "x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -extfile san.ext -out server.pem",
        );
        let certs = CertificateDer::pem_file_iter(dir.path().join("server.pem"))
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .expect("reading the server certificate");
        let key =
            PrivateKeyDer::from_pem_file(dir.path().join("server.key")).expect("reading its key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .expect("a TLS server configuration");
        TestCa {
            dir,
            config: Arc::new(config),
        }
    }

    /// The authority's certificate (PEM), for `SSL_CERT_FILE` or `GIT_SSL_CAINFO`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Serves one accepted connection over TLS with the certificate for `127.0.0.1`:
    /// `serve` gets the decrypted stream; the session is closed properly afterwards.
    pub fn serve(
        &self,
        stream: TcpStream,
        serve: impl FnOnce(&mut StreamOwned<ServerConnection, TcpStream>),
    ) {
        let conn = ServerConnection::new(self.config.clone()).expect("a TLS session");
        let mut tls = StreamOwned::new(conn, stream);
        serve(&mut tls);
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
}

/// Runs openssl with the whitespace-separated `args` in `dir`.
fn openssl(dir: &Path, args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
