//! What each `obzvon` subcommand does, kept out of `main` so it can be tested.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::ari::{self, AriClient};
use crate::config::Settings;
use crate::db;

pub enum Command {
    Serve,
    Migrate,
    CheckConfig {
        connect: bool,
    },
    AriEvents,
    Simulate(crate::sim::cli::Options),
    Demo {
        api: Option<String>,
        operators: Vec<String>,
        leads: usize,
        token: String,
    },
    TokenCreate {
        name: String,
        scopes: Vec<String>,
    },
    TokenList,
    TokenRevoke {
        id_or_name: String,
    },
}

pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = App::build(settings).await?;
            app.run_until_stopped().await
        }
        Command::Migrate => {
            let pool = db::connect(&settings.database)
                .await
                .context("cannot reach PostgreSQL")?;
            let applied = db::migrate(&pool).await.context("migration failed")?;
            if applied.is_empty() {
                println!("schema up to date ({} migrations)", db::MIGRATOR.iter().count());
            } else {
                for m in applied {
                    println!("applied {m}");
                }
            }
            Ok(())
        }
        Command::CheckConfig { connect } => {
            println!("{}", settings.redacted_summary());
            if connect {
                check_connections(&settings).await?;
            }
            println!("configuration OK");
            Ok(())
        }
        Command::Simulate(options) => crate::sim::cli::run(&options),
        Command::Demo {
            api,
            operators,
            leads,
            token,
        } => {
            let api = api.unwrap_or_else(|| format!("http://{}", settings.http.listen));
            crate::demo::run(crate::demo::DemoOptions {
                api,
                operators,
                leads,
                token,
            })
            .await
        }
        Command::TokenCreate { name, scopes } => {
            let pool = connect(&settings).await?;
            let (token, info) = crate::auth::create(&pool, &name, &scopes, &crate::audit::cli_actor()).await?;
            eprintln!(
                "created token {} ({}) with scopes {}; it is shown only now:",
                info.id,
                info.name,
                info.scopes.join(",")
            );
            println!("{token}");
            Ok(())
        }
        Command::TokenList => {
            let pool = connect(&settings).await?;
            let tokens = crate::auth::list(&pool).await?;
            println!(
                "{:<36}  {:<20}  {:<40}  {:<20}  STATE",
                "ID", "NAME", "SCOPES", "LAST USED"
            );
            for t in tokens {
                let used = t
                    .last_used_at
                    .map_or_else(|| "never".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S").to_string());
                let state = t.revoked_at.map_or_else(
                    || "active".to_owned(),
                    |at| format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                );
                println!(
                    "{:<36}  {:<20}  {:<40}  {:<20}  {state}",
                    t.id,
                    t.name,
                    t.scopes.join(","),
                    used
                );
            }
            Ok(())
        }
        Command::TokenRevoke { id_or_name } => {
            let pool = connect(&settings).await?;
            let info = crate::auth::revoke(&pool, &id_or_name, &crate::audit::cli_actor()).await?;
            println!("revoked token {} ({})", info.id, info.name);
            Ok(())
        }
        Command::AriEvents => {
            let client = ari_client(&settings)?;
            let cancel = CancellationToken::new();
            let (mut stream, _task) = ari::ws::spawn(client, settings.ari_stream(), cancel.clone());
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => { cancel.cancel(); return Ok(()) }
                    changed = stream.state.changed() => {
                        changed?;
                        eprintln!("# {:?}", *stream.state.borrow_and_update());
                    }
                    Some(event) = stream.events.recv() => {
                        println!("{} {} {:?}", event.timestamp, event.type_name, event.channel_id());
                    }
                }
            }
        }
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let pool = db::connect(&settings.database)
        .await
        .context("cannot reach PostgreSQL")?;
    let pending = db::pending_migrations(&pool).await?;
    anyhow::ensure!(pending.is_empty(), "the schema is behind; run `obzvon migrate` first");
    Ok(pool)
}

fn ari_client(settings: &Settings) -> anyhow::Result<AriClient> {
    Ok(AriClient::new(
        &settings.ari.url,
        &settings.ari.username,
        settings.ari.password.clone(),
        &settings.ari.app,
    )?)
}

async fn check_connections(settings: &Settings) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database)
        .await
        .context("PostgreSQL: cannot connect")?;
    let pending = db::pending_migrations(&pool)
        .await
        .context("PostgreSQL: cannot read migrations")?;
    if pending.is_empty() {
        println!("PostgreSQL: OK, schema up to date");
    } else {
        println!(
            "PostgreSQL: OK, {} migrations pending (run `obzvon migrate`)",
            pending.len()
        );
    }
    let info = ari_client(settings)?
        .asterisk_info()
        .await
        .context("ARI: cannot reach Asterisk")?;
    let version = info.system.map(|s| s.version).unwrap_or_else(|| "unknown".to_owned());
    println!("ARI: OK, Asterisk {version}");
    Ok(())
}
