//! `wick`: a pure-Rust LLM server that speaks the Ollama API, and its command line.
//!
//! `wick serve` runs the server; the other verbs are clients of a running server at
//! `OLLAMA_HOST`, like Ollama's own CLI.

mod client;
mod host;
mod import;
mod listen;
mod logging;
mod pull;
mod repl;
mod serve;
mod wrap;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Client, ShowWhat};
use crate::host::Host;

#[derive(Debug, Parser)]
#[command(
    name = "wick",
    version,
    about = "Run LLMs locally behind the Ollama API"
)]
struct Cli {
    /// Server address: host, host:port, :port or scheme://host:port
    #[arg(long, env = "OLLAMA_HOST", global = true, hide_env_values = true)]
    host: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server
    #[command(alias = "start")]
    Serve(Box<serve::ServeConfig>),
    /// Create a model from a Modelfile
    Create {
        /// Name of the new model
        name: String,
        /// The Modelfile
        #[arg(short = 'f', long = "file", default_value = "Modelfile")]
        file: PathBuf,
        /// Quantize the model (q8_0, q4_0, q4_K_S, q4_K_M, q5_K_M, q6_K; from F16/F32)
        #[arg(short = 'q', long)]
        quantize: Option<String>,
    },
    /// Show information about a model
    Show {
        model: String,
        /// Show the Modelfile
        #[arg(long)]
        modelfile: bool,
        /// Show the template
        #[arg(long)]
        template: bool,
        /// Show the parameters
        #[arg(long)]
        parameters: bool,
        /// Show the system prompt
        #[arg(long)]
        system: bool,
        /// Show the license
        #[arg(long)]
        license: bool,
        /// Show every metadata key and tensor
        #[arg(short, long)]
        verbose: bool,
    },
    /// Run a model: answer a prompt, or chat interactively
    Run {
        model: String,
        /// The prompt (read from stdin when piped)
        prompt: Vec<String>,
        /// Print timings and token rates
        #[arg(long)]
        verbose: bool,
        /// How long to keep the model loaded (e.g. 5m, 1h, -1)
        #[arg(long)]
        keepalive: Option<String>,
        /// Pull a missing model from an insecure (plain http) registry
        #[arg(long)]
        insecure: bool,
        /// Response format: json, or a JSON schema
        #[arg(long)]
        format: Option<String>,
        /// Thinking: true, false, high, medium or low (plain --think is true)
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        think: Option<String>,
        /// Do not wrap words to the terminal's width
        #[arg(long)]
        nowordwrap: bool,
    },
    /// Stop (unload) a running model
    Stop { model: String },
    /// List models
    #[command(alias = "ls")]
    List,
    /// List running models
    Ps,
    /// Copy a model
    Cp { source: String, destination: String },
    /// Remove models
    Rm {
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// Pull a model from a registry
    Pull {
        model: String,
        /// Use an insecure (plain http) registry
        #[arg(long)]
        insecure: bool,
    },
    /// Push a model to a registry (name it for its destination first: `wick cp`)
    Push {
        model: String,
        /// Use an insecure (plain http) registry
        #[arg(long)]
        insecure: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An error the server reported.
    #[error("{message}")]
    Server { message: String },
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Other(String),
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let host = Host::parse(cli.host.as_deref().unwrap_or_default());
    if let Command::Serve(cfg) = cli.command {
        return serve::serve(&host, *cfg).await;
    }
    let c = Client::new(&host)?;
    match cli.command {
        Command::Serve(_) => Ok(()),
        Command::List => client::list(&c).await,
        Command::Ps => client::ps(&c).await,
        Command::Show {
            model,
            modelfile,
            template,
            parameters,
            system,
            license,
            verbose,
        } => {
            let what = ShowWhat {
                modelfile,
                template,
                parameters,
                system,
                license,
                verbose,
            };
            client::show(&c, &model, what).await
        }
        Command::Cp {
            source,
            destination,
        } => client::copy(&c, &source, &destination).await,
        Command::Rm { models } => client::remove(&c, &models).await,
        Command::Stop { model } => client::stop(&c, &model).await,
        Command::Run {
            model,
            prompt,
            verbose,
            keepalive,
            insecure,
            format,
            think,
            nowordwrap,
        } => {
            let opts = repl::RunOptions {
                model,
                prompt,
                verbose,
                keep_alive: keepalive,
                insecure,
                format,
                think,
                word_wrap: !nowordwrap,
            };
            repl::run(&c, opts).await
        }
        Command::Create {
            name,
            file,
            quantize,
        } => import::create(&c, &name, &file, quantize.as_deref()).await,
        Command::Pull { model, insecure } => pull::pull(&c, &model, insecure).await,
        Command::Push { model, insecure } => pull::push(&c, &model, insecure).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
