//! [`Client::instance_facts`]: the region id and instance id, with the metadata token.

use super::script::Server;
use super::*;
use crate::sources::metadata::{INSTANCE_ID_PATH, REGION_ID_PATH};

fn text(value: &str) -> Canned {
    reply(200, "text/plain", value.as_bytes())
}

async fn facts_with(script: Vec<Canned>) -> (Result<InstanceFacts, MetadataError>, Server) {
    let server = Server::start(script).await;
    let result = client(&config(server.endpoint())).instance_facts().await;
    (result, server)
}

#[tokio::test]
async fn region_and_instance_id_are_read_with_the_metadata_token() {
    let script = vec![
        token(TOKEN_1),
        text("cn-hangzhou"),
        text("i-bp67acfmxazb4ph3xxxx\n"),
    ];
    let (result, server) = facts_with(script).await;
    let facts = result.unwrap();
    assert_eq!(
        facts,
        InstanceFacts {
            region_id: "cn-hangzhou".to_owned(),
            instance_id: "i-bp67acfmxazb4ph3xxxx".to_owned(),
        }
    );
    assert_eq!(
        calls(&server),
        [
            "PUT /latest/api/token".to_owned(),
            format!("GET {REGION_ID_PATH}"),
            format!("GET {INSTANCE_ID_PATH}"),
        ]
    );
    for get in &server.requests()[1..] {
        assert_eq!(get.header(TOKEN_HEADER), Some(TOKEN_1), "{get:?}");
    }
}

#[tokio::test]
async fn a_401_renews_the_token_once_as_for_credentials() {
    let script = vec![
        token(TOKEN_1),
        status(401),
        token(TOKEN_2),
        text("cn-shanghai"),
        text("i-uf6f5trc95ug8t33xxxx"),
    ];
    let (result, server) = facts_with(script).await;
    assert_eq!(result.unwrap().region_id, "cn-shanghai");
    let requests = server.requests();
    assert_eq!(requests[3].header(TOKEN_HEADER), Some(TOKEN_2));
}

#[tokio::test]
async fn a_bad_region_id_is_named_with_its_value() {
    let (result, _server) = facts_with(vec![token(TOKEN_1), text("CN Hangzhou")]).await;
    let e = result.unwrap_err();
    assert_eq!(e.kind(), "invalid_response", "{e:?}");
    let text = e.to_string();
    assert!(text.contains(REGION_ID_PATH), "{text}");
    assert!(
        text.contains("\"CN Hangzhou\" is not a region id"),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_instance_id_is_named_with_its_value() {
    for bad in ["bp67acfmxazb4ph3xxxx", "i-", "<html>404</html>"] {
        let script = vec![token(TOKEN_1), text("cn-hangzhou"), text(bad)];
        let (result, _server) = facts_with(script).await;
        let e = result.unwrap_err();
        let text = e.to_string();
        assert!(text.contains(INSTANCE_ID_PATH), "{bad}: {text}");
        assert!(text.contains("is not an instance id"), "{bad}: {text}");
    }
}

#[tokio::test]
async fn a_404_is_rejected_not_a_missing_ram_role() {
    let (result, _server) = facts_with(vec![token(TOKEN_1), html_404()]).await;
    let e = result.unwrap_err();
    assert!(
        matches!(&e, MetadataError::Rejected { status: 404, path, .. } if path == REGION_ID_PATH),
        "{e:?}"
    );
    assert!(!e.to_string().contains("RAM role"), "{e}");
}

#[tokio::test]
async fn a_5xx_is_unavailable() {
    let (result, _server) =
        facts_with(vec![token(TOKEN_1), text("cn-hangzhou"), status(503)]).await;
    let e = result.unwrap_err();
    assert!(
        matches!(&e, MetadataError::Unavailable { status: 503, path } if path == INSTANCE_ID_PATH),
        "{e:?}"
    );
}
