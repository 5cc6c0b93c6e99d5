//! Reading multi-document YAML/JSON manifests (Services, EndpointSlices, an optional Node,
//! ServiceCIDRs, `List`s).

use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Objects found in manifests.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// ServiceCIDRs.
    pub service_cidrs: Vec<ServiceCIDR>,
}

impl Manifests {
    /// Parses manifest text (YAML or JSON, several documents). Other kinds are ignored.
    pub fn parse_str(&mut self, text: &str, path: &Path) -> Result<()> {
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let err = |message: String| Error::ParseManifest {
                path: path.to_path_buf(),
                index,
                message,
            };
            let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let json = serde_json::to_value(&value).map_err(|e| err(e.to_string()))?;
            self.add_value(json).map_err(err)?;
        }
        Ok(())
    }

    fn add_value(&mut self, v: serde_json::Value) -> std::result::Result<(), String> {
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "Service" => self
                .services
                .push(serde_json::from_value(v).map_err(|e| e.to_string())?),
            "EndpointSlice" => self
                .slices
                .push(serde_json::from_value(v).map_err(|e| e.to_string())?),
            "Node" => self
                .nodes
                .push(serde_json::from_value(v).map_err(|e| e.to_string())?),
            "ServiceCIDR" => self
                .service_cidrs
                .push(serde_json::from_value(v).map_err(|e| e.to_string())?),
            k if k.ends_with("List") => {
                if let Some(items) = v.get("items").and_then(|i| i.as_array()) {
                    for item in items.clone() {
                        self.add_value(item)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads and parses files.
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<Self> {
        let mut m = Manifests::default();
        for p in paths {
            let p = p.as_ref();
            let text = std::fs::read_to_string(p).map_err(|source| Error::ReadManifest {
                path: p.to_path_buf(),
                source,
            })?;
            m.parse_str(&text, p)?;
        }
        Ok(m)
    }

    /// Where the Service CIDRs come from: the ServiceCIDR objects when the manifests hold any
    /// (as `run` does where the API serves them), else the flag.
    pub fn service_cidr_source(&self) -> crate::watch::service_cidrs::ServiceCidrSource {
        use crate::watch::service_cidrs::ServiceCidrSource;
        if self.service_cidrs.is_empty() {
            return ServiceCidrSource::Flag;
        }
        let mut source = ServiceCidrSource::objects();
        source.reset(
            self.service_cidrs
                .iter()
                .filter_map(crate::watch::convert::service_cidr)
                .collect(),
        );
        source
    }

    /// Converts to the renderer's state (ignored objects dropped).
    pub fn to_state(&self) -> crate::types::ProxyState {
        let mut st = crate::types::ProxyState::default();
        for s in &self.services {
            if let Some(info) = crate::watch::convert::service(s) {
                st.upsert_service(info);
            }
        }
        for s in &self.slices {
            if let Some(info) = crate::watch::convert::endpoint_slice(s) {
                st.upsert_slice(info);
            }
        }
        st
    }
}
