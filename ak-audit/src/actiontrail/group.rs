//! Groups long-term AccessKey calls by AccessKeyId, VPC and source IP: calls, errors, first and
//! last time, APIs (`serviceName`/`eventName`) and user agents with counts.

use std::collections::HashMap;

use super::event::Call;

/// One group's totals. Empty strings stand for "absent" in `vpc_id`, `source_ip`, a user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// `userIdentity.accessKeyId`.
    pub access_key_id: String,
    /// `vpcId` (empty: not through a VPC endpoint).
    pub vpc_id: String,
    /// `sourceIpAddress` as written (empty: absent).
    pub source_ip: String,
    /// Calls counted.
    pub calls: u64,
    /// Calls with an `errorCode`.
    pub errors: u64,
    /// Earliest `eventTime`, Unix seconds (`None` only for Log Service results without it).
    pub first_seen: Option<i64>,
    /// Latest `eventTime`, Unix seconds.
    pub last_seen: Option<i64>,
    /// Calls per (`serviceName`, `eventName`).
    pub apis: HashMap<(String, String), u64>,
    /// Calls per `userAgent` (empty: absent).
    pub user_agents: HashMap<String, u64>,
}

impl Group {
    /// Adds `other` (same key) into `self`.
    pub fn merge(&mut self, other: Group) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.first_seen = min_some(self.first_seen, other.first_seen);
        self.last_seen = other.last_seen.max(self.last_seen);
        for (k, n) in other.apis {
            *self.apis.entry(k).or_default() += n;
        }
        for (k, n) in other.user_agents {
            *self.user_agents.entry(k).or_default() += n;
        }
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Groups keyed by `AccessKeyId \0 VpcId \0 SourceIp` (a lookup needs no allocation).
#[derive(Debug, Default)]
pub struct Groups {
    map: HashMap<String, Group>,
    scratch: String,
}

impl Groups {
    /// Counts one call.
    pub fn add(&mut self, call: &Call<'_>) {
        let vpc = call.vpc_id.as_deref().unwrap_or("");
        let ip = call.source_ip.as_deref().unwrap_or("");
        self.scratch.clear();
        for part in [&call.access_key_id[..], vpc, ip] {
            self.scratch.push_str(part);
            self.scratch.push('\0');
        }
        if !self.map.contains_key(self.scratch.as_str()) {
            let group = Group {
                access_key_id: call.access_key_id.to_string(),
                vpc_id: vpc.to_owned(),
                source_ip: ip.to_owned(),
                ..Group::default()
            };
            self.map.insert(self.scratch.clone(), group);
        }
        let Some(g) = self.map.get_mut(self.scratch.as_str()) else {
            return;
        };
        g.calls += 1;
        g.errors += u64::from(call.error);
        g.first_seen = Some(g.first_seen.map_or(call.time, |t| t.min(call.time)));
        g.last_seen = Some(g.last_seen.map_or(call.time, |t| t.max(call.time)));
        count_api(&mut g.apis, &call.service, &call.event_name);
        let ua = call.user_agent.as_deref().unwrap_or("");
        match g.user_agents.get_mut(ua) {
            Some(n) => *n += 1,
            None => {
                g.user_agents.insert(ua.to_owned(), 1);
            }
        }
    }

    /// Adds a whole group (from another thread, or a Log Service result row).
    pub fn add_group(&mut self, group: Group) {
        let key = format!(
            "{}\0{}\0{}\0",
            group.access_key_id, group.vpc_id, group.source_ip
        );
        match self.map.get_mut(&key) {
            Some(g) => g.merge(group),
            None => {
                self.map.insert(key, group);
            }
        }
    }

    /// Adds every group of `other`.
    pub fn merge(&mut self, other: Groups) {
        for (_, g) in other.map {
            self.add_group(g);
        }
    }

    /// The groups, in no particular order.
    pub fn into_groups(self) -> Vec<Group> {
        self.map.into_values().collect()
    }
}

/// Counts one (`service`, `event`) call; allocates only for a new pair. The number of distinct
/// APIs per group is small, so a linear scan is cheaper than hashing two strings.
/// How many APIs a group holds before [`count_api`] stops comparing them one by one.
const LINEAR_APIS: usize = 16;

fn count_api(apis: &mut HashMap<(String, String), u64>, service: &str, event: &str) {
    // Past a handful of APIs a hashed look-up (two small allocations): the linear one made a
    // group calling thousands of distinct event names (hostile input) quadratic.
    if apis.len() > LINEAR_APIS {
        *apis
            .entry((service.to_owned(), event.to_owned()))
            .or_default() += 1;
        return;
    }
    if let Some((_, n)) = apis
        .iter_mut()
        .find(|((s, e), _)| s == service && e == event)
    {
        *n += 1;
        return;
    }
    apis.insert((service.to_owned(), event.to_owned()), 1);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn call(ip: &'static str, time: i64, api: &'static str, error: bool) -> Call<'static> {
        Call {
            event_id: None,
            access_key_id: Cow::Borrowed("LTAI1"),
            vpc_id: None,
            source_ip: Some(Cow::Borrowed(ip)),
            time,
            service: Cow::Borrowed("Ecs"),
            event_name: Cow::Borrowed(api),
            user_agent: None,
            error,
        }
    }

    #[test]
    fn groups_by_key_vpc_ip_and_merges_across_threads() {
        let mut a = Groups::default();
        a.add(&call("1.1.1.1", 20, "A", false));
        a.add(&call("1.1.1.1", 10, "B", true));
        a.add(&call("2.2.2.2", 5, "A", false));
        let mut b = Groups::default();
        b.add(&call("1.1.1.1", 30, "A", false));
        a.merge(b);
        let mut groups = a.into_groups();
        groups.sort_by(|x, y| x.source_ip.cmp(&y.source_ip));
        assert_eq!(groups.len(), 2);
        let g = &groups[0];
        assert_eq!((g.calls, g.errors), (3, 1));
        assert_eq!((g.first_seen, g.last_seen), (Some(10), Some(30)));
        assert_eq!(g.apis[&("Ecs".into(), "A".into())], 2);
        assert_eq!(g.user_agents[""], 3);
        assert_eq!(groups[1].calls, 1);
    }

    #[test]
    fn thousands_of_distinct_event_names_stay_linear() {
        let names: Vec<&'static str> = (0..40_000)
            .map(|i| &*Box::leak(format!("Event{i}").into_boxed_str()))
            .collect();
        let started = std::time::Instant::now();
        let mut groups = Groups::default();
        for name in &names {
            groups.add(&call("1.1.1.1", 1, name, false));
        }
        groups.add(&call("1.1.1.1", 1, names[7], false));
        let g = &groups.into_groups()[0];
        assert_eq!(g.apis.len(), 40_000);
        assert_eq!(g.apis[&("Ecs".into(), "Event7".into())], 2);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
