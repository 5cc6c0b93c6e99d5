//! Backend (b): a real etcd + kube-apiserver started from `KUBEBUILDER_ASSETS`, the way
//! controller-runtime's envtest does it (`pkg/internal/testing/controlplane`):
//! etcd on loopback with a temp data dir; kube-apiserver on a free loopback secure port with a
//! fresh CA and serving certificate (SANs `localhost`, `127.0.0.1`), a client-certificate CA
//! (`--client-ca-file`) and an admin user `envtest-admin` in group `system:masters`, a
//! service-account signing key pair, `--service-cluster-ip-range=10.0.0.0/24`,
//! `--authorization-mode=RBAC`, `--disable-admission-plugins=ServiceAccount`,
//! `--allow-privileged=true`. Certificates are made with the `openssl` command-line tool.
//!
//! This path cannot run in CI (no kube-apiserver binary is available there).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use tokio::process::{Child, Command};

use super::Error;

/// A running etcd + kube-apiserver pair; both are killed on drop.
pub(crate) struct ControlPlane {
    _etcd: Child,
    _apiserver: Child,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
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
    /// Start etcd and kube-apiserver from the binaries in `assets` and wait until ready.
    pub(crate) async fn start(assets: &Path) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("svcnet-envtest-")
            .tempdir()
            .map_err(|e| Error::ControlPlane(format!("temp dir: {e}")))?;
        let d = dir.path();
        make_certs(d)?;
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_bin = assets.join("etcd");
        let help = std::process::Command::new(&etcd_bin).arg("--help").output();
        let no_fsync = help
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).contains("unsafe-no-fsync")
                    || String::from_utf8_lossy(&o.stderr).contains("unsafe-no-fsync")
            })
            .unwrap_or(false);
        let mut etcd_cmd = Command::new(&etcd_bin);
        etcd_cmd
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if no_fsync {
            etcd_cmd.arg("--unsafe-no-fsync=true");
        }
        let etcd = etcd_cmd
            .spawn()
            .map_err(|e| Error::ControlPlane(format!("starting {}: {e}", etcd_bin.display())))?;
        let api_bin = assets.join("kube-apiserver");
        let log = std::fs::File::create(d.join("kube-apiserver.log"))
            .map_err(|e| Error::ControlPlane(e.to_string()))?;
        let apiserver = Command::new(&api_bin)
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--cert-dir={}", d.display()))
            .arg(format!(
                "--tls-cert-file={}",
                d.join("apiserver.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("apiserver.key").display()
            ))
            .arg(format!("--client-ca-file={}", d.join("ca.crt").display()))
            .arg(format!("--secure-port={api_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=true")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--authorization-mode=RBAC")
            .arg(format!(
                "--service-account-issuer=https://127.0.0.1:{api_port}/"
            ))
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa-signer.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa-signer.key").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::ControlPlane(format!("starting {}: {e}", api_bin.display())))?;
        let kubeconfig = d.join("kubeconfig");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    certificate-authority-data: {}\nusers:\n- name: envtest-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: envtest-admin\n    namespace: default\ncurrent-context: envtest\n",
            b64_file(&d.join("ca.crt"))?,
            b64_file(&d.join("admin.crt"))?,
            b64_file(&d.join("admin.key"))?,
        );
        std::fs::write(&kubeconfig, yaml).map_err(|e| Error::ControlPlane(e.to_string()))?;
        let plane = Self {
            _etcd: etcd,
            _apiserver: apiserver,
            kubeconfig,
            _dir: dir,
        };
        let client = super::client_from_kubeconfig(&plane.kubeconfig).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
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
                    return Ok(plane);
                }
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(plane._dir.path().join("kube-apiserver.log"))
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
                    "kube-apiserver not ready within 60s; log tail:\n{tail}"
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
