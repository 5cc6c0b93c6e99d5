//! The Kubernetes client every binary builds the same way.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::{Error, Result};

/// A client from the kubeconfig at `path`, or (without one) from the in-cluster service account
/// or `$KUBECONFIG` / `~/.kube/config`, as kubectl and client-go infer it.
pub async fn client(path: Option<&Path>) -> Result<Client> {
    let config = match path {
        Some(path) => {
            let err = |reason: String| Error::Kubeconfig {
                path: path.display().to_string(),
                reason,
            };
            let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(e.to_string()))?
        }
        None => Config::infer().await.map_err(|e| Error::Kubeconfig {
            path: String::new(),
            reason: e.to_string(),
        })?,
    };
    Ok(Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_kubeconfig_names_the_path() {
        let Err(err) = client(Some(Path::new("/nonexistent/kubeconfig"))).await else {
            panic!("a client from a missing kubeconfig");
        };
        assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    }
}
