//! Migrations against a real, empty PostgreSQL database, the rules the schema enforces, and what
//! the engine's journaled writes do to the rows.

mod common;

use common::TestDb;
use obzvon::calls::{AttemptResult, AttemptStatus};
use obzvon::campaigns::CampaignState;
use obzvon::leads::LeadState;
use obzvon::operators::OperatorState;
use sqlx::PgPool;
use uuid::Uuid;

async fn migrated() -> (TestDb, PgPool) {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    obzvon::db::migrate(&pool).await.unwrap();
    (db, pool)
}

/// A campaign's lead `phone` whose one attempt was bridged and ended as a success; the
/// lead's and the attempt's ids.
async fn finished_call(pool: &PgPool, campaign: obzvon::ids::CampaignId, phone: &str) -> (Uuid, Uuid) {
    let (lead, attempt) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO leads (id, campaign_id, phone_e164, state, attempts_count, last_result) VALUES ($1, $2, $3, 'done', 1, 'success')")
        .bind(lead)
        .bind(campaign)
        .bind(phone)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO attempts (id, campaign_id, lead_id, phone_e164, status, result, answered_at, bridged_at, ended_at)
         VALUES ($1, $2, $3, $4, 'completed', 'success', now() - interval '5 s', now() - interval '4 s', now())",
    )
    .bind(attempt)
    .bind(campaign)
    .bind(lead)
    .bind(phone)
    .execute(pool)
    .await
    .unwrap();
    (lead, attempt)
}

fn constraint(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|d| d.constraint()).map(str::to_owned)
}

async fn insert_attempt(pool: &PgPool, phone: &str, status: &str) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    let ended = !matches!(status, "init" | "ringing" | "in-progress");
    sqlx::query(
        "INSERT INTO attempts (id, phone_e164, status, ended_at) VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)",
    )
    .bind(id)
    .bind(phone)
    .bind(status)
    .bind(ended)
    .execute(pool)
    .await?;
    Ok(id)
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_idempotently() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let pending = obzvon::db::pending_migrations(&pool).await.unwrap();
    assert_eq!(pending.len(), obzvon::db::MIGRATOR.iter().count());

    let applied = obzvon::db::migrate(&pool).await.unwrap();
    assert_eq!(applied.len(), pending.len());
    let again = obzvon::db::migrate(&pool).await.unwrap();
    assert!(again.is_empty(), "second run applied {again:?}");
    assert!(obzvon::db::pending_migrations(&pool).await.unwrap().is_empty());

    for table in [
        "campaigns",
        "leads",
        "operators",
        "attempts",
        "attempt_transitions",
        "outbox",
        "dnc",
        "api_tokens",
        "audit_log",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(exists, "table {table} missing");
    }
    let indexes: Vec<String> = sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'")
        .fetch_all(&pool)
        .await
        .unwrap();
    for index in [
        "leads_claim_idx",
        "leads_campaign_state_idx",
        "attempts_lead_idx",
        "attempts_campaign_idx",
        "attempts_status_idx",
        "attempts_one_live_per_number",
    ] {
        assert!(indexes.iter().any(|i| i == index), "index {index} missing: {indexes:?}");
    }
}

#[tokio::test]
async fn one_number_cannot_be_in_two_live_attempts() {
    let (_db, pool) = migrated().await;
    let phone = "+79161234567";
    let first = insert_attempt(&pool, phone, "ringing").await.unwrap();

    for status in ["init", "ringing", "in-progress"] {
        let err = insert_attempt(&pool, phone, status).await.unwrap_err();
        assert_eq!(
            constraint(&err).as_deref(),
            Some("attempts_one_live_per_number"),
            "{status}: {err}"
        );
    }
    // Other numbers and finished attempts to the same number are fine.
    insert_attempt(&pool, "+79161234568", "init").await.unwrap();
    insert_attempt(&pool, phone, "failed").await.unwrap();

    sqlx::query("UPDATE attempts SET status = 'completed', result = 'success', ended_at = now() WHERE id = $1")
        .bind(first)
        .execute(&pool)
        .await
        .unwrap();
    insert_attempt(&pool, phone, "init")
        .await
        .expect("the number is free once the first call ended");
}

#[tokio::test]
async fn state_columns_accept_exactly_the_wire_names() {
    let (_db, pool) = migrated().await;
    for status in AttemptStatus::ALL {
        insert_attempt(&pool, &format!("+7916000{:04}", rand_suffix()), status.as_str())
            .await
            .unwrap_or_else(|e| panic!("status {status}: {e}"));
    }
    let err = insert_attempt(&pool, "+79160009999", "in_progress").await.unwrap_err();
    assert!(constraint(&err).is_some(), "{err}");

    for result in AttemptResult::ALL {
        sqlx::query(
            "INSERT INTO attempts (id, phone_e164, status, result, ended_at) VALUES ($1, $2, 'failed', $3, now())",
        )
        .bind(Uuid::new_v4())
        .bind("+79161110000")
        .bind(result.as_str())
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("result {result}: {e}"));
    }

    let campaign = Uuid::new_v4();
    for state in CampaignState::ALL {
        sqlx::query("INSERT INTO campaigns (id, name, state, trunk, caller_id) VALUES ($1, $2, $3, 'PJSIP/{number}@trunk', '74950000000')")
            .bind(if *state == CampaignState::Draft { campaign } else { Uuid::new_v4() })
            .bind(format!("c-{state}"))
            .bind(state.as_str())
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("campaign state {state}: {e}"));
    }
    for (i, state) in LeadState::ALL.iter().enumerate() {
        sqlx::query("INSERT INTO leads (id, campaign_id, phone_e164, state) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::new_v4())
            .bind(campaign)
            .bind(format!("+7916200000{i}"))
            .bind(state.as_str())
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("lead state {state}: {e}"));
    }
    for (i, state) in OperatorState::ALL.iter().enumerate() {
        sqlx::query("INSERT INTO operators (id, name, endpoint, state) VALUES ($1, 'op', $2, $3)")
            .bind(Uuid::new_v4())
            .bind(format!("PJSIP/op{i}"))
            .bind(state.as_str())
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("operator state {state}: {e}"));
    }
}

#[tokio::test]
async fn leads_are_unique_per_campaign_number_and_phones_must_be_e164() {
    let (_db, pool) = migrated().await;
    let campaign = Uuid::new_v4();
    sqlx::query("INSERT INTO campaigns (id, name, trunk, caller_id) VALUES ($1, 'c', 'PJSIP/{number}@trunk', '1')")
        .bind(campaign)
        .execute(&pool)
        .await
        .unwrap();
    let insert = |phone: &'static str| {
        sqlx::query("INSERT INTO leads (id, campaign_id, phone_e164) VALUES ($1, $2, $3)")
            .bind(Uuid::new_v4())
            .bind(campaign)
            .bind(phone)
            .execute(&pool)
    };
    insert("+79161234567").await.unwrap();
    let dup = insert("+79161234567").await.unwrap_err();
    assert_eq!(constraint(&dup).as_deref(), Some("leads_campaign_phone_key"));
    let bad = insert("89161234567").await.unwrap_err();
    assert_eq!(constraint(&bad).as_deref(), Some("leads_phone_e164_check"));
}

#[tokio::test]
async fn transition_log_and_audit_log_are_append_only() {
    let (_db, pool) = migrated().await;
    let attempt = insert_attempt(&pool, "+79163334455", "init").await.unwrap();
    sqlx::query("INSERT INTO attempt_transitions (attempt_id, from_status, to_status) VALUES ($1, NULL, 'init')")
        .bind(attempt)
        .execute(&pool)
        .await
        .unwrap();
    let err = sqlx::query("UPDATE attempt_transitions SET to_status = 'completed'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(sqlx::query("DELETE FROM attempt_transitions")
        .execute(&pool)
        .await
        .is_err());

    sqlx::query("INSERT INTO audit_log (actor, action, entity_type) VALUES ('t', 'x', 'y')")
        .execute(&pool)
        .await
        .unwrap();
    assert!(sqlx::query("DELETE FROM audit_log").execute(&pool).await.is_err());
}

#[tokio::test]
async fn terminal_attempts_need_an_end_time_and_live_ones_cannot_have_one() {
    let (_db, pool) = migrated().await;
    let err = sqlx::query("INSERT INTO attempts (id, phone_e164, status) VALUES ($1, '+79165550000', 'completed')")
        .bind(Uuid::new_v4())
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(constraint(&err).as_deref(), Some("attempts_ended_when_terminal"));
}

fn rand_suffix() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A call recorded `success` whose operator's phone turns out to have been dead when the
/// customer was put through is corrected to `operator-lost`: the timeline says why, the CRM
/// hears of it, and the lead is called again instead of being done.
#[tokio::test]
async fn a_call_put_through_to_a_dead_phone_is_corrected_to_operator_lost_and_the_lead_retried() {
    let (_db, pool) = migrated().await;
    let spec = obzvon::campaigns::CampaignSpec {
        name: "dead phone".into(),
        trunk: "PJSIP/{number}@trunk".into(),
        caller_id: "+74950000000".into(),
        ..Default::default()
    };
    let campaign = obzvon::campaigns::store::create(&pool, spec).await.unwrap();
    let (lead, attempt) = finished_call(&pool, campaign.id, "+79161230000").await;
    let write = obzvon::calls::engine::core::Write::OperatorLost {
        attempt: obzvon::ids::AttemptId::from_uuid(attempt),
        reason: "the operator's phone had gone silent 12 ms before the customer was put through".into(),
    };
    obzvon::calls::store::apply(&pool, "test", 1, &write).await.unwrap();
    // A replay of the same journal entry changes nothing more.
    obzvon::calls::store::apply(&pool, "test", 1, &write).await.unwrap();

    let result: String = sqlx::query_scalar("SELECT result FROM attempts WHERE id = $1")
        .bind(attempt)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(result, "operator-lost");
    let (state, next): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT state, next_attempt_at FROM leads WHERE id = $1")
            .bind(lead)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "scheduled", "the customer is called again");
    assert!(next.is_some_and(|n| n > chrono::Utc::now()));
    let why: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT detail FROM attempt_transitions WHERE attempt_id = $1 AND result = 'operator-lost'")
            .bind(attempt)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(why[0]["source"], "dialer");
    assert!(why[0]["why"].as_str().unwrap().contains("gone silent"), "{why:?}");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE attempt_id = $1 AND event_type = 'OutboundCallDisposition'",
    )
    .bind(attempt)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 1, "one disposition event for the CRM");
}

#[tokio::test]
async fn journal_entries_applied_in_a_batch_are_applied_once_and_a_replayed_batch_only_adds_the_new_ones() {
    let (_db, pool) = migrated().await;
    let spec = obzvon::campaigns::CampaignSpec {
        name: "batch".into(),
        trunk: "PJSIP/{number}@trunk".into(),
        caller_id: "+74950000000".into(),
        ..Default::default()
    };
    let campaign = obzvon::campaigns::store::create(&pool, spec).await.unwrap();
    let mut writes = Vec::new();
    for i in 0..3 {
        let (_, attempt) = finished_call(&pool, campaign.id, &format!("+7916123000{i}")).await;
        writes.push((
            attempt,
            obzvon::calls::engine::core::Write::OperatorLost {
                attempt: obzvon::ids::AttemptId::from_uuid(attempt),
                reason: "silent phone".into(),
            },
        ));
    }
    let lost = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM attempt_transitions WHERE result = 'operator-lost'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let checkpoint = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT applied_seq FROM engine_journal WHERE instance = 'test'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let first: Vec<(u64, &obzvon::calls::engine::core::Write)> = vec![(1, &writes[0].1), (2, &writes[1].1)];
    obzvon::calls::store::apply_batch(&pool, "test", &first).await.unwrap();
    assert_eq!((lost(pool.clone()).await, checkpoint(pool.clone()).await), (2, 2));
    // After a crash the same entries come again with the next one: only that one is applied.
    let again: Vec<(u64, &obzvon::calls::engine::core::Write)> =
        (1..=3).map(|s| (s, &writes[s as usize - 1].1)).collect();
    obzvon::calls::store::apply_batch(&pool, "test", &again).await.unwrap();
    assert_eq!((lost(pool.clone()).await, checkpoint(pool.clone()).await), (3, 3));
    obzvon::calls::store::apply_batch(&pool, "test", &again).await.unwrap();
    assert_eq!(
        lost(pool.clone()).await,
        3,
        "a batch wholly below the checkpoint changes nothing"
    );
    for (attempt, _) in &writes {
        let result: String = sqlx::query_scalar("SELECT result FROM attempts WHERE id = $1")
            .bind(attempt)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(result, "operator-lost");
    }
}
