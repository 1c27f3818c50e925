#[derive(Clone)]
struct Calc;

#[runar::service(path = "calc")]
impl Calc {
    #[action]
    async fn add(a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }

    #[action]
    async fn reset(&mut self) -> runar::Result<()> {
        Ok(())
    }
}

fn main() {}
