//! The audit log of management actions: who (token or CLI user), what, when, and the entity
//! before and after. The table is append-only (a trigger refuses updates and deletes).

use serde_json::Value;

/// Appends one entry; pass the transaction of the change when there is one.
pub async fn record<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    actor: &str,
    action: &str,
    entity_type: &str,
    entity_id: Option<&str>,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (actor, action, entity_type, entity_id, before, after)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor)
    .bind(action)
    .bind(entity_type)
    .bind(entity_id)
    .bind(before)
    .bind(after)
    .execute(executor)
    .await?;
    Ok(())
}

/// The actor name for commands run from a shell: `cli:<user>`.
pub fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
