//! The batch Lambda: silver, the gap report and gold, after ingestion.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cryptolake_lambda::serve(|event, settings| async move {
        cryptolake_lambda::handle_transform(event, &settings).await
    })
    .await
}
