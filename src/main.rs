//! The sipcast binary: load the config, check the pipeline templates, serve the REST API, drive calls.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::sync::{mpsc, oneshot};

use sipcast::api::{self, AppState};
use sipcast::call::Registry;
use sipcast::config::Config;
use sipcast::driver::{Command, Driver, COMMAND_QUEUE};
use sipcast::media::{self, TemplateNames, Templates};

#[derive(Parser)]
#[command(version, about = "SIP-to-RTMP gateway with a WCS-compatible REST API")]
struct Args {
    /// Config file (TOML).
    #[arg(short, long, default_value = "config/sipcast.toml")]
    config: PathBuf,
    /// Check the config and pipeline templates, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let registry = Arc::new(Registry::new(
        config.calls.max_calls,
        Duration::from_secs(config.calls.keep_finished_secs),
    ));
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let driver = Driver::bind(config.clone(), registry.clone(), templates, commands_rx).await?;
    let sip_addr = driver.sip_addr()?;
    let driver_task = tokio::spawn(driver.run());

    let state = AppState::new(registry, commands.clone(), config.sip.default_user.clone());
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    tracing::info!(http = %listener.local_addr()?, sip = %sip_addr, "sipcast ready");
    let router = api::app(state, config.http.max_body_bytes);

    // SIGTERM/Ctrl-C: the driver drains (BYE on every call, EOS on every stream, the registry refuses new
    // calls so the API answers 503) while HTTP keeps serving; HTTP stops once the driver is done, all
    // within 5 s.
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let drain_commands = commands.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested: draining");
        let (done, done_rx) = oneshot::channel();
        if drain_commands.send(Command::Shutdown(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(4300), done_rx).await;
        }
        let _ = http_stop.send(());
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = http_stopped.await;
        })
        .await?;

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
