//! A Spin HTTP component that touches each Spin feature the runner does
//! not serve, so that its component imports each one's interface: the
//! runner must refuse it when it is loaded, naming them all, rather than
//! fail its requests one at a time.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let which = request.uri().path().to_owned();
    let failed = match which.as_str() {
        "/sqlite" => spin_sdk::sqlite::Connection::open_default().await.is_err(),
        "/pg" => spin_sdk::pg::Connection::open("postgres://db").await.is_err(),
        "/mysql" => spin_sdk::mysql::Connection::open("mysql://db").await.is_err(),
        "/redis" => spin_sdk::redis::Connection::open("redis://cache").await.is_err(),
        "/mqtt" => spin_sdk::mqtt::Connection::open("mqtt://broker", "", "", 30)
            .await
            .is_err(),
        "/llm" => {
            spin_sdk::llm::infer(spin_sdk::llm::InferencingModel::Llama2Chat, "hello").is_err()
        }
        _ => false,
    };
    format!("failed: {failed}")
}
