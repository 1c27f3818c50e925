#[derive(Clone)]
struct Calc;

#[runar::service(path = "calc", colour = "blue")]
impl Calc {}

#[derive(Clone)]
struct Other;

#[runar::service(path = "other")]
impl Other {
    #[action("Add Numbers")]
    async fn add(&self, #[runar(sint32)] a: u64, #[runar(enumeration)] b: f64) -> runar::Result<f64> {
        Ok(a as f64 + b)
    }

    #[subscribe("math/computed")]
    async fn on_computed(&self, v: f64) -> runar::Result<f64> {
        Ok(v)
    }
}

fn main() {}
