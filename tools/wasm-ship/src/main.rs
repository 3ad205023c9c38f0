//! wasm-ship IN.wasm OUT.wasm [MODULE_NAME]   rewrite for shipping (see the library docs)
//!   WASM_SHIP_UNROLL=FACTOR:MAX_BODY_BYTES[:PASS,...]
//!                                              loop unrolling (default below; 1:0 turns it off) and
//!                                              the marked loops' pass lengths
//! wasm-ship --check FILE.wasm                 exit 1 if FILE still has float selects or no name section
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--check", file] => check(file),
        [input, output] => ship(input, output, "sd"),
        [input, output, name] => ship(input, output, name),
        _ => Err("usage: wasm-ship IN.wasm OUT.wasm [MODULE_NAME] | wasm-ship --check FILE.wasm".into()),
    };
    if let Err(e) = result {
        eprintln!("wasm-ship: {e}");
        exit(1);
    }
}

fn ship(input: &str, output: &str, name: &str) -> Result<(), wasm_ship::Error> {
    let module = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let default = wasm_ship::sd_wasm_unroll();
    let unroll = match std::env::var("WASM_SHIP_UNROLL") {
        Ok(v) => {
            let mut fields = v.split(':');
            let (Some(f), Some(b)) = (fields.next(), fields.next()) else {
                return Err("WASM_SHIP_UNROLL=FACTOR:MAX_BODY_BYTES[:PASS,...]".into());
            };
            let marked_passes = match fields.next() {
                Some(list) => Vec::leak(list.split(',').filter(|p| !p.is_empty()).map(str::parse).collect::<Result<Vec<usize>, _>>()?),
                None => default.marked_passes,
            };
            wasm_ship::Unroll { factor: f.parse()?, marked_factor: f.parse()?, marked_passes, max_body_bytes: b.parse()?, ..default }
        }
        Err(_) => default,
    };
    let (shipped, report) = wasm_ship::ship(&module, name, unroll)?;
    std::fs::write(output, &shipped).map_err(|e| format!("{output}: {e}"))?;
    println!(
        "{output}: {} bytes ({} float selects rewritten as if/else, {} loops unrolled {}x ({} of them in whole passes), {} loads of marked functions rewritten, {} bytes of names dropped)",
        shipped.len(),
        report.float_selects,
        report.loops_unrolled,
        unroll.factor,
        report.loops_in_passes,
        report.loads_rewritten,
        report.name_section_bytes
    );
    Ok(())
}

fn check(file: &str) -> Result<(), wasm_ship::Error> {
    let module = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let report = wasm_ship::inspect(&module)?;
    if report.float_selects > 0 {
        return Err(format!("{file}: {} float selects (miscompiled by wazero v1.12.0 on amd64)", report.float_selects).into());
    }
    if report.name_section_bytes == 0 {
        return Err(format!("{file}: no name section (Bacalhau rejects the module)").into());
    }
    println!("{file}: no float selects, name section present");
    Ok(())
}
