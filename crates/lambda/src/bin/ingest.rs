//! The ingestion Lambda: bronze only, on the hourly schedule.

use cryptolake_lambda::{Settings, handle_ingest, init_logging};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    // Settings are read once per cold start; a bad one fails every invocation with its name.
    let settings = Settings::from_env().map_err(|e| e.to_string());
    run(service_fn(|event: LambdaEvent<Value>| {
        let settings = settings.clone();
        async move {
            let settings = settings.map_err(Error::from)?;
            let report = handle_ingest(event.payload, &settings).await?;
            Ok::<_, Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
