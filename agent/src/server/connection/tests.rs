//! The configuration watch a connection is judged again by.

use super::*;

/// What `w` sees once the follower has run (a current-thread runtime: it runs when this
/// task yields).
use crate::server::config::Config as ServerConfig;

async fn next_change(w: &mut ConfigWatch, v: &ConfigVersions) -> Option<Arc<Published>> {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    w.changed(v)
}

#[tokio::test]
async fn a_config_watch_sees_each_publication_once_and_the_last_after_the_sender_is_gone() {
    let (tx, rx) = watch::channel(Arc::new(Published::default()));
    let versions = Arc::new(ConfigVersions::new(rx));
    let follower = tokio::spawn({
        let versions = Arc::clone(&versions);
        async move { versions.follow().await }
    });
    let (cfg, mut w) = ConfigWatch::current(&versions);
    assert!(cfg.allowed_uids.is_empty());
    assert!(next_change(&mut w, &versions).await.is_none());
    let allow = |uid| {
        Arc::new(Published::from(ServerConfig {
            allowed_uids: vec![uid],
            ..ServerConfig::default()
        }))
    };
    tx.send_replace(allow(7));
    let cfg = next_change(&mut w, &versions).await;
    assert_eq!(cfg.unwrap().allowed_uids, [7]);
    assert!(next_change(&mut w, &versions).await.is_none());
    // A last publication, then the sender is gone: seen once, then never again.
    tx.send_replace(allow(8));
    drop(tx);
    let cfg = next_change(&mut w, &versions).await;
    assert_eq!(cfg.unwrap().allowed_uids, [8]);
    assert!(next_change(&mut w, &versions).await.is_none());
    follower.await.expect("the follower ends with the sender");
    // A watch made after the sender is gone has its last value and nothing to see.
    let (cfg, mut w) = ConfigWatch::current(&versions);
    assert_eq!(cfg.allowed_uids, [8]);
    assert!(w.changed(&versions).is_none());
}
