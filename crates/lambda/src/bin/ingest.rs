//! The ingestion Lambda: bronze only, on the hourly schedule.

fn main() -> Result<(), lambda_runtime::Error> {
    cryptolake_pipeline::runtime()?.block_on(cryptolake_lambda::serve(
        |event, settings| async move { cryptolake_lambda::handle_ingest(event, &settings).await },
    ))
}
