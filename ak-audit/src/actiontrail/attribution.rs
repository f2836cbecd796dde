//! Attribution: which instance made a group's calls.
//!
//! - Through a VPC endpoint, `vpcId` + the private source IP name one instance in the
//!   `DescribeInstances` inventory (`VpcAttributes.VpcId`,
//!   `VpcAttributes.PrivateIpAddress.IpAddress[]`). A VPC alone names none.
//! - Through a public endpoint, the source IP is matched against instances' public IPs
//!   (`PublicIpAddress.IpAddress[]`) and EIPs (`EipAddress.IpAddress`), then against the
//!   `--public-ips` list (the account's own addresses, e.g. NAT gateway EIPs).
//! - A source that is not an IP (`Internal`, a service host) is reported as such.
//!
//! The inventory is today's: an IP released and reused since the call names the new holder.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

/// An instance from `DescribeInstances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `InstanceId`.
    pub id: String,
    /// `InstanceName` (`None` when empty or absent).
    pub name: Option<String>,
}

/// Where a group's calls came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An instance in the inventory.
    Instance(Instance),
    /// One of the account's public addresses (`--public-ips`, or an inventory IP), no instance.
    OwnAddress,
    /// `sourceIpAddress` is not an IP (`Internal`, a service host).
    NotIp,
    /// Off-cloud, another account's, or not in the inventory.
    Unknown,
}

/// The account's instances and addresses.
#[derive(Debug, Default)]
pub struct Inventory {
    private: HashMap<(String, IpAddr), Instance>,
    public: HashMap<IpAddr, Instance>,
    own: HashSet<IpAddr>,
}

/// Why an inventory file could not be used (a usage error).
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file, escaped.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not the JSON `DescribeInstances` prints.
    #[error("{file}: not a DescribeInstances response: {reason}")]
    Shape {
        /// The file, escaped.
        file: String,
        /// serde_json's message (positions and field names only).
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Page {
    instances: Instances,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Instances {
    #[serde(default)]
    instance: Vec<RawInstance>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Addresses {
    #[serde(default)]
    ip_address: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Eip {
    #[serde(default)]
    ip_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VpcAttributes {
    #[serde(default)]
    vpc_id: String,
    #[serde(default)]
    private_ip_address: Addresses,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInstance {
    instance_id: String,
    #[serde(default)]
    instance_name: String,
    #[serde(default)]
    vpc_attributes: VpcAttributes,
    #[serde(default)]
    public_ip_address: Addresses,
    #[serde(default)]
    eip_address: Eip,
}

impl Inventory {
    /// Adds one `DescribeInstances` page (JSON, as `aliyun ecs DescribeInstances` prints it).
    ///
    /// # Errors
    /// [`InventoryError`] when the file cannot be read or has no `Instances.Instance`.
    pub fn add_instances_file(&mut self, path: &Path) -> Result<(), InventoryError> {
        let file = super::input::shown(path);
        let text = std::fs::read(path).map_err(|source| InventoryError::Read {
            file: file.clone(),
            source,
        })?;
        let page: Page = serde_json::from_slice(&text).map_err(|e| InventoryError::Shape {
            file,
            reason: e.to_string(),
        })?;
        for raw in page.instances.instance {
            self.add_instance(raw);
        }
        Ok(())
    }

    fn add_instance(&mut self, raw: RawInstance) {
        let instance = Instance {
            id: raw.instance_id,
            name: Some(raw.instance_name).filter(|n| !n.is_empty()),
        };
        let vpc = raw.vpc_attributes.vpc_id;
        for ip in raw.vpc_attributes.private_ip_address.ip_address {
            if let (false, Ok(ip)) = (vpc.is_empty(), ip.parse()) {
                self.private.insert((vpc.clone(), ip), instance.clone());
            }
        }
        let public = raw.public_ip_address.ip_address.into_iter();
        for ip in public.chain(std::iter::once(raw.eip_address.ip_address)) {
            if let Ok(ip) = ip.parse() {
                self.public.insert(ip, instance.clone());
            }
        }
    }

    /// Adds the account's own public addresses: one per line, `#` starts a comment. Lines that
    /// are not addresses are reported on standard error and skipped.
    ///
    /// # Errors
    /// [`InventoryError::Read`] when the file cannot be read.
    pub fn add_public_ips_file(&mut self, path: &Path) -> Result<(), InventoryError> {
        let file = super::input::shown(path);
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            file: file.clone(),
            source,
        })?;
        for (n, line) in text.lines().enumerate() {
            let addr = line.split('#').next().unwrap_or("").trim();
            if addr.is_empty() {
                continue;
            }
            match addr.parse() {
                Ok(ip) => {
                    self.own.insert(ip);
                }
                Err(_) => eprintln!("ecs-ak-audit: {file}:{}: not an IP address", n + 1),
            }
        }
        Ok(())
    }

    /// Where calls with `vpc_id` (empty: none) and `source_ip` came from.
    pub fn attribute(&self, vpc_id: &str, source_ip: &str) -> Source {
        let Ok(ip) = source_ip.parse::<IpAddr>() else {
            return if source_ip.is_empty() {
                Source::Unknown
            } else {
                Source::NotIp
            };
        };
        let found = if vpc_id.is_empty() {
            self.public.get(&ip)
        } else {
            self.private.get(&(vpc_id.to_owned(), ip))
        };
        match found {
            Some(i) => Source::Instance(i.clone()),
            None if vpc_id.is_empty() && self.own.contains(&ip) => Source::OwnAddress,
            None => Source::Unknown,
        }
    }
}

/// `vpc` when the call came through a VPC endpoint, `public` when its source is an IP,
/// `unknown` otherwise.
pub fn endpoint(vpc_id: &str, source_ip: &str) -> &'static str {
    if !vpc_id.is_empty() {
        "vpc"
    } else if source_ip.parse::<IpAddr>().is_ok() {
        "public"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("p1.json");
        std::fs::write(
            &page,
            r#"{"TotalCount":2,"PageNumber":1,"PageSize":10,"Instances":{"Instance":[
              {"InstanceId":"i-a","InstanceName":"web","RegionId":"cn-hangzhou",
               "VpcAttributes":{"VpcId":"vpc-1","PrivateIpAddress":{"IpAddress":["172.16.0.5"]}},
               "PublicIpAddress":{"IpAddress":["47.0.0.1"]},"EipAddress":{"IpAddress":""}},
              {"InstanceId":"i-b","InstanceName":"",
               "VpcAttributes":{"VpcId":"vpc-2","PrivateIpAddress":{"IpAddress":["172.16.0.5"]}},
               "PublicIpAddress":{"IpAddress":[]},"EipAddress":{"IpAddress":"8.8.4.4"}}]}}"#,
        )
        .unwrap();
        let ips = dir.path().join("ips");
        std::fs::write(&ips, "# NAT\n39.0.0.9  # snat\n\nnot-an-ip\n").unwrap();
        let mut inv = Inventory::default();
        inv.add_instances_file(&page).unwrap();
        inv.add_public_ips_file(&ips).unwrap();
        inv
    }

    #[test]
    fn vpc_and_private_ip_name_the_instance_and_public_ips_too() {
        let inv = inventory();
        let a = Instance {
            id: "i-a".into(),
            name: Some("web".into()),
        };
        let b = Instance {
            id: "i-b".into(),
            name: None,
        };
        assert_eq!(
            inv.attribute("vpc-1", "172.16.0.5"),
            Source::Instance(a.clone())
        );
        assert_eq!(
            inv.attribute("vpc-2", "172.16.0.5"),
            Source::Instance(b.clone())
        );
        assert_eq!(inv.attribute("vpc-3", "172.16.0.5"), Source::Unknown);
        assert_eq!(inv.attribute("", "47.0.0.1"), Source::Instance(a));
        assert_eq!(inv.attribute("", "8.8.4.4"), Source::Instance(b));
        assert_eq!(inv.attribute("", "39.0.0.9"), Source::OwnAddress);
        assert_eq!(inv.attribute("", "1.2.3.4"), Source::Unknown);
        assert_eq!(inv.attribute("", "Internal"), Source::NotIp);
        assert_eq!(inv.attribute("", "ecs.aliyuncs.com"), Source::NotIp);
        assert_eq!(endpoint("vpc-1", "x"), "vpc");
        assert_eq!(endpoint("", "::1"), "public");
        assert_eq!(endpoint("", "Internal"), "unknown");
    }

    #[test]
    fn a_file_that_is_not_describe_instances_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, "{\"Vpcs\":{}}").unwrap();
        let e = Inventory::default().add_instances_file(&p).unwrap_err();
        assert!(
            e.to_string().contains("not a DescribeInstances response"),
            "{e}"
        );
    }
}
