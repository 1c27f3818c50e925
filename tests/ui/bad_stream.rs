#[runar::service(path = "stock")]
trait Stock {
    // Not `Send + 'static`.
    async fn watch(&self, id: u64) -> runar::Result<impl runar::Stream<Item = runar::Result<u64>>>;
    // Items that are not `runar::Result<T>`.
    async fn bare(&self) -> runar::Result<impl runar::Stream<Item = u64> + Send + 'static>;
    // An item type with no protobuf message form.
    async fn lists(&self) -> runar::Result<impl runar::Stream<Item = runar::Result<Vec<u64>>> + Send + 'static>;
    // A stream of requests and another parameter.
    async fn restock(&self, items: runar::Streaming<u64>, note: String) -> runar::Result<u64>;
    // A stream of requests whose items have no protobuf message form.
    async fn batches(&self, items: runar::Streaming<Vec<u64>>) -> runar::Result<u64>;
    // A subscription cannot stream.
    #[subscribe("stock/changed")]
    async fn on_changed(&self, changes: runar::Streaming<u64>) -> runar::Result<()>;
}

fn main() {}
