//! The batch Lambda: silver, the gap report and gold, after ingestion.

fn main() -> Result<(), lambda_runtime::Error> {
    cryptolake_pipeline::runtime()?.block_on(cryptolake_lambda::serve(|event, settings| async move {
        cryptolake_lambda::handle_transform(event, &settings).await
    }))
}
