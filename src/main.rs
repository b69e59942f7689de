//! The `obzvon` command: thin; everything lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use obzvon::config::Settings;

#[derive(Parser)]
#[command(name = "obzvon", version, about = "Outbound call-campaign dialer for Asterisk")]
struct Cli {
    /// TOML configuration file (see obzvon.example.toml); OBZVON_<SECTION>__<KEY> variables
    /// override it. Without it: built-in defaults plus the environment.
    #[arg(long, short, global = true, env = "OBZVON_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dialer: ARI application, scheduler, REST API.
    Serve,
    /// Apply pending database migrations (safe to repeat).
    Migrate,
    /// Print the REST API's OpenAPI 3.1 document (JSON), as `/api/v1/openapi.json` serves it;
    /// needs no configuration, database or Asterisk (for generating clients in a build).
    Openapi,
    /// Validate the configuration and print it without secrets.
    CheckConfig {
        /// Also connect to PostgreSQL and ARI and report what answers.
        #[arg(long)]
        connect: bool,
    },
    /// Print ARI events for the configured application as they arrive (diagnostics).
    AriEvents,
    /// Compare pacing policies (ours among them) on a simulated population and team: the
    /// default table is operators 5/20/100 × live-answer rate 0.1/0.3, a drifting day and a
    /// shift start, 8 hours each. Needs no database or Asterisk.
    Simulate {
        /// Seeds per row.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// Simulated hours per run.
        #[arg(long, default_value_t = 8.0)]
        hours: f64,
        /// Operator counts (replaces the default scenarios' 5,20,100).
        #[arg(long, value_delimiter = ',')]
        agents: Vec<usize>,
        /// Live-answer rates (replaces the default scenarios' 0.1,0.3).
        #[arg(long, value_delimiter = ',')]
        hit_rates: Vec<f64>,
        /// Policies: progressive, ratio, vicidial-adapt, predictive, oracle.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "progressive,ratio,vicidial-adapt,predictive,oracle"
        )]
        policies: Vec<String>,
        /// Leave out the drifting day and the shift start.
        #[arg(long)]
        no_extra: bool,
        /// Abandoned calls over live answers the policies aim at (at most).
        #[arg(long, default_value_t = 0.03)]
        target_abandon_rate: f64,
        /// One JSON object per row on stdout instead of the table.
        #[arg(long)]
        json: bool,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Mean talk time (lognormal, coefficient of variation 1).
        #[arg(long, default_value_t = 120.0)]
        talk_mean_secs: f64,
        /// Wrap-up after every call.
        #[arg(long, default_value_t = 10.0)]
        wrap_secs: f64,
        /// Of the dials no person answers, the share answered by machines (the rest are busy
        /// or ring out).
        #[arg(long, default_value_t = 0.2)]
        machine_share: f64,
        /// Operators log in spread over this long from the start (0: all at once).
        #[arg(long, default_value_t = 600.0)]
        login_spread_secs: f64,
    },
    /// Run a demo campaign through a running `obzvon serve` (scripts/demo.sh does it all).
    Demo {
        /// obzvon's HTTP address; default: the configured [http] listen address.
        #[arg(long)]
        api: Option<String>,
        /// Operator endpoints whose phones log in (SIPp in the test bed).
        #[arg(long, value_delimiter = ',', default_value = "PJSIP/op1,PJSIP/op2")]
        operators: Vec<String>,
        /// How many leads to call.
        #[arg(long, default_value_t = 30)]
        leads: usize,
        /// An API token with scope admin (`obzvon token create --scope admin`).
        #[arg(long, env = "OBZVON_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once, on stdout, and stored only as a hash.
    Create {
        /// Who or what uses it, e.g. "crm".
        #[arg(long)]
        name: String,
        /// calls:write, campaigns:write, operators:write, reports:read or admin; repeat or
        /// separate with commas.
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke a token by id or name; requests with it get 401 at once.
    Revoke { id_or_name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        println!("{}", obzvon::api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("obzvon: {e}");
            return ExitCode::from(2);
        }
    };
    obzvon::telemetry::init(&settings.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(obzvon::cli::run(cli_command(cli.command), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("obzvon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cli_command(command: Command) -> obzvon::cli::Command {
    match command {
        Command::Serve => obzvon::cli::Command::Serve,
        Command::Migrate => obzvon::cli::Command::Migrate,
        Command::Openapi => unreachable!("printed before the settings are read"),
        Command::CheckConfig { connect } => obzvon::cli::Command::CheckConfig { connect },
        Command::AriEvents => obzvon::cli::Command::AriEvents,
        Command::Simulate {
            seeds,
            hours,
            agents,
            hit_rates,
            policies,
            no_extra,
            target_abandon_rate,
            json,
            threads,
            talk_mean_secs,
            wrap_secs,
            machine_share,
            login_spread_secs,
        } => obzvon::cli::Command::Simulate(obzvon::sim::cli::Options {
            seeds,
            hours,
            agents,
            hit_rates,
            policies,
            extra: !no_extra,
            target_abandon_rate,
            json,
            threads,
            talk_mean_secs,
            wrap_secs,
            machine_share,
            login_spread_secs,
        }),
        Command::Demo {
            api,
            operators,
            leads,
            token,
        } => obzvon::cli::Command::Demo {
            api,
            operators,
            leads,
            token,
        },
        Command::Token(TokenCommand::Create { name, scopes }) => obzvon::cli::Command::TokenCreate { name, scopes },
        Command::Token(TokenCommand::List) => obzvon::cli::Command::TokenList,
        Command::Token(TokenCommand::Revoke { id_or_name }) => obzvon::cli::Command::TokenRevoke { id_or_name },
    }
}
