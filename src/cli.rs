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
    Demo {
        api: Option<String>,
        operators: Vec<String>,
        leads: usize,
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
        Command::Demo { api, operators, leads } => {
            let api = api.unwrap_or_else(|| format!("http://{}", settings.http.listen));
            crate::demo::run(crate::demo::DemoOptions { api, operators, leads }).await
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
