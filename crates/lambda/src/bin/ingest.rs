//! The ingestion Lambda: bronze only, on the hourly schedule.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cryptolake_lambda::serve(|event, settings| async move {
        cryptolake_lambda::handle_ingest(event, &settings).await
    })
    .await
}
