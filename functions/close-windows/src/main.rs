//! The close-windows Lambda: see `taxi_aws::close_windows_function`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    taxi_aws::close_windows_function::run().await
}
