//! The sipcast binary: load the config, check the pipeline templates, serve the REST API, drive calls.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::sync::{mpsc, oneshot};

use sipcast::api::{self, AppState, Settings};
use sipcast::call::Registry;
use sipcast::config::{Config, Profile};
use sipcast::driver::{Command, Driver, COMMAND_QUEUE};
use sipcast::media::{self, TemplateNames, Templates};
use sipcast::notify::Notifier;

#[derive(Parser)]
#[command(version, about = "SIP-to-RTMP gateway with a WCS-compatible REST API")]
struct Args {
    /// Config file (TOML).
    #[arg(short, long, default_value = "config/sipcast.toml")]
    config: PathBuf,
    /// Check the config and pipeline templates, then exit.
    #[arg(long)]
    check: bool,
    /// Read a password from standard input, print its argon2 hash for `[[auth.users]] password_hash`,
    /// then exit.
    #[arg(long)]
    hash_password: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.hash_password {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "the password is empty");
        let hash = api::auth::hash_password(password).map_err(anyhow::Error::msg)?;
        println!("{hash}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIPCAST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    let config = Arc::new(Config::load(&args.config)?);
    media::init().context("GStreamer did not initialise")?;
    let names = TemplateNames {
        audio_g711: &config.media.audio_g711_template,
        h264: &config.media.h264_template,
        vp8: &config.media.vp8_template,
        rtmp_output: &config.media.rtmp_output_template,
        file_output: &config.media.file_output_template,
    };
    let templates = Templates::load(
        &config.media.pipelines_dir,
        &names,
        config.media.jitter_latency_ms,
        config.media.aac_bitrate,
    )?;
    if args.check {
        println!("config and pipeline templates are valid");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, templates))
}

async fn serve(config: Arc<Config>, templates: Templates) -> anyhow::Result<()> {
    let (notifier, events) = Notifier::start(&config.webhooks)?;
    let registry = Arc::new(Registry::with_events(
        config.calls.max_calls,
        Duration::from_secs(config.calls.keep_finished_secs),
        events,
    ));
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let driver = Driver::bind(config.clone(), registry.clone(), templates, commands_rx).await?;
    let sip_addr = driver.sip_addr()?;
    let driver_task = tokio::spawn(driver.run());

    let state = AppState::new(
        registry,
        commands.clone(),
        notifier.clone(),
        Settings::from_config(&config),
    );
    let router = api::app(state);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let tls_listener = match config.https.files() {
        Some((cert, key)) => {
            let tls = api::tls::server_config(cert, key)?;
            Some(api::tls::TlsListener::bind(config.https.listen, tls).await?)
        }
        None => None,
    };
    let https = tls_listener.as_ref().map(|l| l.addr()).map_or_else(
        || "off (no https.cert_file/key_file)".to_owned(),
        |a| a.to_string(),
    );
    if config.auth.profile == Profile::Production && tls_listener.is_none() {
        tracing::warn!(
            "production profile without HTTPS: Basic credentials cross the network in clear"
        );
    }
    tracing::info!(
        http = %http_addr,
        https,
        sip = %sip_addr,
        profile = ?config.auth.profile,
        webhooks = config.webhooks.apps.len(),
        "sipcast ready"
    );

    // One signal stops both listeners and ends open event streams.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // SIGTERM/Ctrl-C: the driver drains first (BYE on every call, EOS on every stream, the registry refuses
    // new calls so the API answers 503) while HTTP keeps serving; then the listeners and event streams
    // stop, all within 5 s.
    let stop_on_signal = {
        let notifier = notifier.clone();
        let drain_commands = commands.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested: draining");
            let (done, done_rx) = oneshot::channel();
            if drain_commands.send(Command::Shutdown(done)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_millis(4300), done_rx).await;
            }
            notifier.close();
            stop.send_replace(true);
        }
    };
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_server = axum::serve(listener, router.clone())
        .with_graceful_shutdown(until_stopped(stopped.clone()));
    match tls_listener {
        Some(tls_listener) => {
            let https_server = axum::serve(tls_listener, router)
                .with_graceful_shutdown(until_stopped(stopped.clone()));
            let (_, http, https) =
                tokio::join!(stop_on_signal, async { http_server.await }, async {
                    https_server.await
                });
            http?;
            https?;
        }
        None => {
            let (_, http) = tokio::join!(stop_on_signal, async { http_server.await });
            http?;
        }
    }

    drop(commands);
    let _ = tokio::time::timeout(Duration::from_millis(500), driver_task).await;
    tracing::info!("sipcast stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
