#[runar::service(path = "math")]
trait Math {
    async fn shout(&self, text: &str) -> runar::Result<String>;
    async fn pair(&self, p: (f64, f64)) -> runar::Result<f64>;
    async fn small(&self, n: u8) -> runar::Result<u32>;
    async fn nested(&self, rows: Vec<Vec<f64>>) -> runar::Result<u32>;
}

#[derive(Clone)]
struct Store<S> {
    items: S,
}

#[runar::service(path = "store")]
impl<S: Clone + Send + Sync + 'static> Store<S> {
    #[action]
    async fn put(&self, _item: Vec<S>) -> runar::Result<()> {
        Ok(())
    }
}

fn main() {}
