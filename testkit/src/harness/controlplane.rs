//! Backend (b): a real etcd + kube-apiserver (+ kube-controller-manager) started from
//! `KUBEBUILDER_ASSETS`, the way controller-runtime's envtest does it
//! (`pkg/internal/testing/controlplane`), with the defaults the embedded server has:
//!
//! * etcd on loopback with a temp data dir;
//! * kube-apiserver on a free loopback secure port with a fresh CA and serving certificate (SANs
//!   `localhost`, `127.0.0.1`), a client-certificate CA and an admin user `envtest-admin` in group
//!   `system:masters`, a service-account signing key pair, RBAC authorization, no ServiceAccount
//!   admission, `--endpoint-reconciler-type=none` (no kubelet registers itself);
//! * the ranges the suites assume and svcnet's own defaults: Service CIDRs
//!   [`SERVICE_CIDRS`] (IPv4 primary, IPv6 secondary) and NodePorts [`NODE_PORT_RANGE`];
//! * kube-controller-manager running only the `namespace` and `garbagecollector` controllers,
//!   so that namespace deletion and ownerReference cascades complete as they do on the embedded
//!   server (which runs both itself) and on every real cluster. Nothing else of upstream runs:
//!   no endpoint controllers, no kube-proxy.
//!
//! The three processes run under one `sh` supervisor whose standard input is a pipe held by
//! this process. When that pipe closes — the [`ControlPlane`] is dropped, or the test process
//! exits or dies, which is what happens to a process-wide plane shared by a test binary — the
//! supervisor stops all three and removes the data directory. No control plane outlives its
//! test binary. Certificates are made with the `openssl` command-line tool.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use std::process::{Child, Command};

use super::Error;

/// A running etcd + kube-apiserver + kube-controller-manager, stopped when this is dropped
/// (or when the process that started it exits).
pub(crate) struct ControlPlane {
    /// The supervisor; closing its stdin stops everything (see the module docs).
    supervisor: Child,
    pub kubeconfig: PathBuf,
    dir: PathBuf,
    /// etcd's client address (plain HTTP on loopback), for compaction.
    etcd: SocketAddr,
}

/// Service CIDRs given to kube-apiserver: svcnet's default IPv4 range first (what the embedded
/// server's clients and the IPAM suites assume), and an IPv6 range for dual-stack Services.
pub const SERVICE_CIDRS: &str = "10.96.0.0/12,fd00:10:96::/112";
/// The NodePort range given to kube-apiserver (upstream's and svcnet's default).
pub const NODE_PORT_RANGE: &str = "30000-32767";

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Closing the pipe tells the supervisor to stop the processes; wait for it so that a
        // dedicated plane is gone before the next one starts.
        drop(self.supervisor.stdin.take());
        let _ = self.supervisor.wait();
    }
}

/// Quote one word for `sh`.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

fn sh_command(bin: &Path, args: &[String], log: &Path) -> String {
    let mut line = sh_quote(&bin.display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&sh_quote(a));
    }
    format!(
        "{line} </dev/null >{} 2>&1 &",
        sh_quote(&log.display().to_string())
    )
}

/// Does `bin --help` mention `word` (a flag or feature gate this binary accepts)?
fn binary_mentions(bin: &Path, word: &str) -> bool {
    std::process::Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(word)
                || String::from_utf8_lossy(&o.stderr).contains(word)
        })
        .unwrap_or(false)
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::ControlPlane(format!("no free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::ControlPlane(format!("no free port: {e}")))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::ControlPlane(format!("running openssl: {e}")))?;
    if !out.status.success() {
        return Err(Error::ControlPlane(format!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Make a CA, a serving cert, an admin client cert and a service-account key pair in `dir`.
fn make_certs(dir: &Path) -> Result<(), Error> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=svcnet-envtest-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ];
    ca.extend(ec);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,digitalSignature",
    ]);
    openssl(dir, &ca)?;
    std::fs::write(dir.join("serving.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
        .map_err(|e| Error::ControlPlane(e.to_string()))?;
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )
    .map_err(|e| Error::ControlPlane(e.to_string()))?;
    for (name, subj, ext) in [
        ("apiserver", "/CN=localhost", "serving.ext"),
        ("admin", "/O=system:masters/CN=envtest-admin", "client.ext"),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let mut req = vec![
            "req",
            "-new",
            "-subj",
            subj,
            "-keyout",
            key.as_str(),
            "-out",
            csr.as_str(),
        ];
        req.extend(ec);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                ext,
            ],
        )?;
    }
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "sa-signer.key",
        ],
    )?;
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            "sa-signer.key",
            "-pubout",
            "-out",
            "sa-signer.pub",
        ],
    )?;
    Ok(())
}

fn b64_file(path: &Path) -> Result<String, Error> {
    let data = std::fs::read(path)
        .map_err(|e| Error::ControlPlane(format!("reading {}: {e}", path.display())))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(data))
}

impl ControlPlane {
    /// Start etcd, kube-apiserver and kube-controller-manager from the binaries in `assets`
    /// and wait until the API server is ready and has created the default namespace.
    pub(crate) async fn start(assets: &Path) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("svcnet-envtest-")
            .tempdir()
            .map_err(|e| Error::ControlPlane(format!("temp dir: {e}")))?
            .keep();
        let d = dir.as_path();
        make_certs(d)?;
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_bin = assets.join("etcd");
        let no_fsync = binary_mentions(&etcd_bin, "unsafe-no-fsync");
        let p = |name: &str| d.join(name).display().to_string();
        let mut etcd_args = vec![
            format!("--data-dir={}", p("etcd")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
        ];
        if no_fsync {
            etcd_args.push("--unsafe-no-fsync=true".into());
        }
        let mut api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", d.display()),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDRS}"),
            format!("--service-node-port-range={NODE_PORT_RANGE}"),
            "--endpoint-reconciler-type=none".into(),
            // Leases are served straight from etcd (no watch cache), so a compaction of etcd's
            // history expires old Lease resourceVersions for watches too, as it does for
            // paginated lists of every kind.
            "--watch-cache-sizes=leases.coordination.k8s.io#0".into(),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://127.0.0.1:{api_port}/"),
            format!("--service-account-key-file={}", p("sa-signer.pub")),
            format!("--service-account-signing-key-file={}", p("sa-signer.key")),
        ];
        // `fieldValidation` is behind an alpha gate in 1.23/1.24 (beta and on by default from
        // 1.25, the gate removed later); pass it only to binaries that still know the gate.
        if binary_mentions(&assets.join("kube-apiserver"), "ServerSideFieldValidation") {
            api_args.push("--feature-gates=ServerSideFieldValidation=true".into());
        }
        let kubeconfig = d.join("kubeconfig");
        let kcm_args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--controllers=namespace,garbagecollector".into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
        ];
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    certificate-authority-data: {}\nusers:\n- name: envtest-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: envtest-admin\n    namespace: default\ncurrent-context: envtest\n",
            b64_file(&d.join("ca.crt"))?,
            b64_file(&d.join("admin.crt"))?,
            b64_file(&d.join("admin.key"))?,
        );
        std::fs::write(&kubeconfig, yaml).map_err(|e| Error::ControlPlane(e.to_string()))?;
        let mut kcm = String::new();
        let kcm_bin = assets.join("kube-controller-manager");
        if kcm_bin.exists() {
            kcm = sh_command(&kcm_bin, &kcm_args, &d.join("kube-controller-manager.log"));
        }
        // One supervisor for the three processes: it waits for its stdin to close, then stops
        // them and removes the data directory.
        let script = format!(
            "{etcd}\ne=$!\n{api}\na=$!\n{kcm}\nread -r _ || true\nkill $! $a $e 2>/dev/null\nwait\nrm -rf {dir}\n",
            etcd = sh_command(&etcd_bin, &etcd_args, &d.join("etcd.log")),
            api = sh_command(
                &assets.join("kube-apiserver"),
                &api_args,
                &d.join("kube-apiserver.log")
            ),
            dir = sh_quote(&d.display().to_string()),
        );
        let supervisor = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::ControlPlane(format!("starting the control plane: {e}")))?;
        let plane = Self {
            supervisor,
            kubeconfig,
            dir,
            etcd: SocketAddr::from(([127, 0, 0, 1], etcd_port)),
        };
        plane.wait_ready().await?;
        Ok(plane)
    }

    /// Compact etcd's history (physically) so that every resourceVersion from before this call
    /// is gone for continue tokens and uncached watches (410 Expired). etcd keeps the revision a
    /// compaction names, so a marker key outside the API server's prefix is written first and the
    /// compaction names the marker's revision.
    pub(crate) async fn compact_history(&self) -> Result<(), Error> {
        let put = self
            .etcd_post(
                "/v3/kv/put",
                r#"{"key":"c3ZjbmV0LWhhcm5lc3MtY29tcGFjdGlvbg==","value":""}"#,
            )
            .await?;
        let revision = put
            .pointer("/header/revision")
            .and_then(|r| {
                r.as_str()
                    .map(str::to_string)
                    .or_else(|| r.as_i64().map(|n| n.to_string()))
            })
            .ok_or_else(|| {
                Error::ControlPlane(format!("etcd put answer without a revision: {put}"))
            })?;
        self.etcd_post(
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )
        .await?;
        Ok(())
    }

    /// One request to etcd's JSON gateway over HTTP/1.1 (the connection closes after it).
    async fn etcd_post(&self, path: &str, body: &str) -> Result<serde_json::Value, Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::ControlPlane(format!("etcd {path}: {what}: {e}"))
        };
        let mut conn = tokio::net::TcpStream::connect(self.etcd)
            .await
            .map_err(|e| fail("connect", &e))?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.etcd,
            body.len()
        );
        conn.write_all(req.as_bytes())
            .await
            .map_err(|e| fail("write", &e))?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
            .await
            .map_err(|e| fail("read", &e))?
            .map_err(|e| fail("read", &e))?;
        let text = String::from_utf8_lossy(&answer);
        let (head, payload) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| fail("answer", &"no HTTP header"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(fail("answer", &head.lines().next().unwrap_or_default()));
        }
        // etcd's gateway answers small bodies in one piece, or chunked: take the JSON object.
        let json = payload
            .find('{')
            .zip(payload.rfind('}'))
            .map(|(a, b)| &payload[a..=b])
            .ok_or_else(|| fail("answer", &payload))?;
        serde_json::from_str(json).map_err(|e| fail("JSON", &e))
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let client = super::client_from_kubeconfig(&self.kubeconfig).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let ready = client
                .request_text(
                    http::Request::get("/readyz")
                        .body(Vec::new())
                        .map_err(|e| Error::ControlPlane(e.to_string()))?,
                )
                .await;
            if ready.is_ok() {
                // The default namespace is created by a post-start hook shortly after readiness.
                let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                    kube::Api::all(client.clone());
                if ns.get_opt("default").await.ok().flatten().is_some() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log"))
                    .unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(Error::ControlPlane(format!(
                    "kube-apiserver not ready within 90s; log tail:\n{tail}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificates kube-apiserver needs are produced and chain to the CA. (Needs `openssl`.)
    #[test]
    fn certificates_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path()).unwrap();
        for f in [
            "ca.crt",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "admin.key",
            "sa-signer.key",
            "sa-signer.pub",
        ] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
        for crt in ["apiserver.crt", "admin.crt"] {
            openssl(dir.path(), &["verify", "-CAfile", "ca.crt", crt]).unwrap();
        }
        let out = std::process::Command::new("openssl")
            .args(["x509", "-in", "admin.crt", "-noout", "-subject"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let subject = String::from_utf8_lossy(&out.stdout);
        assert!(
            subject.contains("system:masters") && subject.contains("envtest-admin"),
            "{subject}"
        );
        let out = std::process::Command::new("openssl")
            .args([
                "x509",
                "-in",
                "apiserver.crt",
                "-noout",
                "-ext",
                "subjectAltName",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let san = String::from_utf8_lossy(&out.stdout);
        assert!(
            san.contains("127.0.0.1") && san.contains("localhost"),
            "{san}"
        );
    }
}
