//! The aggregate Lambda: see `taxi_aws::aggregate_function`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    taxi_aws::aggregate_function::run().await
}
