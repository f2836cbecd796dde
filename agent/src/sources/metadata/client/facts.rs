//! The instance facts the STS client needs: region id and instance id.

use super::Client;
use crate::sources::metadata::{MetadataError, INSTANCE_ID_PATH, REGION_ID_PATH};

/// Facts about this instance, read from the metadata service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    /// `/latest/meta-data/region-id`, e.g. `cn-hangzhou`: `[a-z0-9-]`, 1 to 64 characters.
    pub region_id: String,
    /// `/latest/meta-data/instance-id`, e.g. `i-bp67acfmxazb4ph3xxxx`: `i-` then `[a-z0-9]`,
    /// at most 64 characters in all.
    pub instance_id: String,
}

impl Client {
    /// Reads the region id and the instance id: `GET /latest/meta-data/region-id` and
    /// `GET /latest/meta-data/instance-id`, in hardened mode with the cached metadata token,
    /// under the retry table of [`Client`] (a 404 here is
    /// [`Rejected`](MetadataError::Rejected), not a missing RAM role).
    ///
    /// # Errors
    /// The [`MetadataError`] of a failed request, or
    /// [`InvalidResponse`](MetadataError::InvalidResponse) naming the path and what is wrong
    /// with the value (quoted escaped, at most 64 characters: neither is secret).
    pub async fn instance_facts(&self) -> Result<InstanceFacts, MetadataError> {
        let region_id = self.fact(REGION_ID_PATH, check_region_id).await?;
        let instance_id = self.fact(INSTANCE_ID_PATH, check_instance_id).await?;
        Ok(InstanceFacts {
            region_id,
            instance_id,
        })
    }

    async fn fact(
        &self,
        path: &'static str,
        check: fn(&str) -> Result<(), &'static str>,
    ) -> Result<String, MetadataError> {
        let mut token = self.session_token().await?;
        let answer = match self.get(path, &mut token, None).await {
            Err(MetadataError::RoleNotAttached { .. }) => {
                return Err(MetadataError::Rejected {
                    method: "GET",
                    path: path.to_owned(),
                    status: 404,
                })
            }
            other => other?,
        };
        let invalid = |what: String| MetadataError::InvalidResponse {
            path: path.to_owned(),
            what,
        };
        let text = std::str::from_utf8(&answer.body)
            .map_err(|_| invalid("not UTF-8 text".to_owned()))?
            .trim();
        check(text).map_err(|rule| {
            let shown: String = text.chars().take(64).collect();
            invalid(format!("{shown:?} is not {rule}"))
        })?;
        Ok(text.to_owned())
    }
}

/// A region id: `[a-z0-9-]`, 1 to 64 characters.
fn check_region_id(s: &str) -> Result<(), &'static str> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(())
        .ok_or("a region id (1 to 64 of a-z 0-9 -, like cn-hangzhou)")
}

/// An instance id: `i-` then `[a-z0-9]`, at most 64 characters in all.
fn check_instance_id(s: &str) -> Result<(), &'static str> {
    let ok = s.len() <= 64
        && s.strip_prefix("i-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    ok.then_some(()).ok_or(
        "an instance id (i- then a-z 0-9, at most 64 characters, like i-bp67acfmxazb4ph3xxxx)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for ok in ["cn-hangzhou", "ap-southeast-1", "us-east-1"] {
            assert!(check_region_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "CN-hangzhou",
            "cn hangzhou",
            "cn_hangzhou",
            &"a".repeat(65),
        ] {
            assert!(check_region_id(bad).is_err(), "{bad}");
        }
        for ok in ["i-bp67acfmxazb4ph3xxxx", "i-1"] {
            assert!(check_instance_id(ok).is_ok(), "{ok}");
        }
        let long = format!("i-{}", "a".repeat(63));
        for bad in [
            "",
            "i-",
            "bp67acfmxazb4ph3xxxx",
            "i-BP67",
            "i-bp.67",
            long.as_str(),
        ] {
            assert!(check_instance_id(bad).is_err(), "{bad}");
        }
    }
}
