mod proto;
fn main() {
    let _ = proto::AppendFactRequest::default();
}
