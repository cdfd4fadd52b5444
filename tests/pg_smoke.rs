//! Smoke tests of the PostgreSQL test harness as the integration tests use it: each test gets a
//! real database of its own (a throwaway cluster, or `DATABASE_URL`).

use test_support::TestDb;

#[tokio::test]
async fn select_one() {
    let db = TestDb::new().await;
    let row = db.client().query_one("select 1", &[]).await.unwrap();
    let one: i32 = row.get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn two_test_dbs_are_distinct() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());

    a.client()
        .batch_execute("create table only_in_a (x int); insert into only_in_a values (1)")
        .await
        .unwrap();
    let in_a: Option<String> = a
        .client()
        .query_one("select to_regclass('only_in_a')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_a.as_deref(), Some("only_in_a"));
    let in_b: Option<String> = b
        .client()
        .query_one("select to_regclass('only_in_a')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_b, None, "b must not see a's table");
}
