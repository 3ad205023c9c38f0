//! Exports differ in how they type the inputs: optimum writes `timestep` as an int64 scalar or
//! [batch], `input_ids` as int32 or int64. The tiny fixture has float [steps] timesteps and
//! int32 ids; these tests rewrite its graphs into the other forms (a Cast in front keeps the
//! arithmetic identical) and check sd.wasm still gives diffusers' picture.

use crate::common::*;
use prost::Message;
use tract_onnx::pb;

const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;

/// Retypes graph input `name` (rank 0 when `scalar`) and casts it back to `original` in front
/// of every consumer.
fn retype_input(path: &std::path::Path, name: &str, elem_type: i32, scalar: bool, original: i32) {
    let mut model = pb::ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let casted = format!("{name}_as_exported");
    for node in graph.node.iter_mut() {
        for input in node.input.iter_mut().filter(|i| *i == name) {
            *input = casted.clone();
        }
    }
    let cast = pb::NodeProto {
        input: vec![name.into()],
        output: vec![casted],
        name: format!("{name}_cast"),
        op_type: "Cast".into(),
        attribute: vec![pb::AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: original as i64,
            ..Default::default()
        }],
        ..Default::default()
    };
    graph.node.insert(0, cast);
    let input = graph.input.iter_mut().find(|i| i.name == name).unwrap();
    let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        panic!("{name} is not a tensor input")
    };
    t.elem_type = elem_type;
    if scalar {
        t.shape.as_mut().unwrap().dim.clear();
    }
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

fn check_pndm_case(model: &std::path::Path, name: &str) {
    let out = scratch(&format!("variant-out-{name}"));
    let run = run_wasm(
        model,
        &out,
        &["--prompt", "a lighthouse at dusk, oil painting", "--negative-prompt", "blurry", "--seed", "42", "--steps", "12",
          "--guidance-scale", "7.5", "--scheduler", "pndm", "--quiet"],
    );
    assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    let png = files_in(&out).into_iter().find(|p| p.extension().unwrap() == "png").unwrap();
    let diff = max_pixel_diff(&read_png(&png), &read_png(&expected_dir().join("pndm.png")));
    assert!(diff <= 2, "{name}: {diff}/255 from diffusers' picture");
}

#[test]
fn int64_scalar_timestep_as_optimum_writes_it() {
    let m = tiny_model_copy("ts-int64-scalar");
    retype_input(&m.join("unet/model.onnx"), "timestep", INT64, true, FLOAT);
    check_pndm_case(&m, "int64 scalar timestep");
}

#[test]
fn int64_timestep_of_shape_batch() {
    let m = tiny_model_copy("ts-int64-batch");
    retype_input(&m.join("unet/model.onnx"), "timestep", INT64, false, FLOAT);
    check_pndm_case(&m, "int64 [batch] timestep");
}

#[test]
fn float_scalar_timestep() {
    let m = tiny_model_copy("ts-float-scalar");
    retype_input(&m.join("unet/model.onnx"), "timestep", FLOAT, true, FLOAT);
    check_pndm_case(&m, "float scalar timestep");
}

#[test]
fn int64_input_ids() {
    let m = tiny_model_copy("ids-int64");
    retype_input(&m.join("text_encoder/model.onnx"), "input_ids", INT64, false, INT32);
    check_pndm_case(&m, "int64 input_ids");
}
