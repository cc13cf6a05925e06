//! The basics: a real client gets correct answers through Tollgate.

use tollgate_e2e::{Env, EnvOptions};

#[tokio::test]
async fn tokio_postgres_queries_through_transaction_pool() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let client = env.connect().await.unwrap();
    let row = client
        .query_one("SELECT 1 + $1::int", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let rows = client.simple_query("SELECT 'a'; SELECT 'b'").await.unwrap();
    let values: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["a", "b"]);
}
