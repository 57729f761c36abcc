//! The Azure Functions trace readers' tests: rows, arrivals over their minute, durations
//! drawn from the percentiles, errors that name the line; and (`fuzz`) arbitrary rows and
//! counts never panic.

use super::*;
use baton_core::TdgConfig;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("baton-azure-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn both_2019_layouts_expand_counts_reproducibly() {
    let dir = temp_dir("layouts");
    let original = write(
        &dir,
        "a_invocations_x.csv",
        "HashOwner,HashApp,HashFunction,Trigger,480,481\no,app1,f1,http,2,1\no,app1,f2,timer,0,3\n",
    );
    write(
        &dir,
        "a_durations.csv",
        "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\no,app1,f1,10,3,5,20,5,5,8,10,12,19,20\n",
    );
    write(
        &dir,
        "a_memory.csv",
        "HashFunction,HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,AverageAllocatedMb_pct100\nf1,o,app1,10,100,90,91,95,99.5,101,110,120,130\n",
    );
    let rekeyed = write(
        &dir,
        "b_invocations.csv",
        "HashFunction,HashOwner,HashApp,1_minute,2_minute\nf9,f9,f9,0,4\n",
    );
    let read = |path: &Path, seed| {
        let mut tdg = Tdg::new(TdgConfig::default());
        let mut report = ReadReport::default();
        let options = AzureOptions {
            seed,
            ..AzureOptions::default()
        };
        let trace = read_azure2019(path, None, None, &options, &mut tdg, &mut report).unwrap();
        let starts: Vec<(String, u64, u64)> = trace
            .requests
            .iter()
            .flat_map(|r| {
                r.invocations().iter().map(|i| {
                    (
                        tdg.tasks().name(i.task.0).to_owned(),
                        i.start_us,
                        i.usage.wall_us,
                    )
                })
            })
            .collect();
        (trace, starts, report)
    };
    let (trace, starts, report) = read(&original, 7);
    assert_eq!(trace.n_arrivals, 6);
    assert_eq!(
        trace.requests.len(),
        6,
        "no inference: one request per arrival"
    );
    assert_eq!(trace.memory_mib.len(), 1);
    assert_eq!(trace.memory_mib[0].1, 100);
    for (task, start, duration) in &starts {
        assert!((480 * 60_000_000..482 * 60_000_000).contains(start));
        if task == "f1" {
            assert!((5_000..=20_000).contains(duration), "{duration}");
        } else {
            assert_eq!(*duration, 1_000_000, "f2 has no duration row");
        }
    }
    assert!(report
        .notes
        .iter()
        .any(|n| n.contains("1 functions have no duration row")));
    assert_eq!(read(&original, 7).1, starts, "same seed, same arrivals");
    assert_ne!(read(&original, 8).1, starts, "another seed, other arrivals");
    let (trace, starts, _) = read(&rekeyed, 1);
    assert_eq!(trace.n_arrivals, 4);
    assert!(
        starts
            .iter()
            .all(|(_, s, _)| (60_000_000..120_000_000).contains(s)),
        "2_minute is the second minute"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn chains_are_inferred_within_an_app_and_window() {
    let dir = temp_dir("chains");
    // Every 20 s: A's x, then A's y 0.7 s later, and B's x between them; A's z once,
    // alone; and a broken row.
    let mut text = String::from("app,func,end_timestamp,duration\n");
    for k in 0..5 {
        let t = 20.0 * k as f64;
        text.push_str(&format!(
            "A,x,{},0.5\nA,y,{},0.5\nB,x,{},0.5\n",
            t + 1.0,
            t + 1.7,
            t + 1.3
        ));
    }
    text.push_str("A,z,10.0,0.5\nbad,row,-1,zz\n");
    let path = write(&dir, "t.csv", &text);
    let mut tdg = Tdg::new(TdgConfig::default());
    let mut report = ReadReport::default();
    let options = AzureOptions {
        infer_chains_us: Some(1_000_000),
        ..AzureOptions::default()
    };
    let trace = read_azure2021(&path, &options, &mut tdg, &mut report).unwrap();
    let name = |r: &Request, i: usize| tdg.tasks().name(r.invocations()[i].task.0).to_owned();
    let chains: Vec<(String, String)> = trace
        .requests
        .iter()
        .filter(|r| r.invocations().len() == 2)
        .map(|r| (name(r, 0), name(r, 1)))
        .collect();
    // The first x → y is one sighting, no evidence yet; the four after it are chained,
    // and nothing crosses apps.
    assert_eq!(chains.len(), 4, "{chains:?}");
    assert!(chains
        .iter()
        .all(|(a, b)| a.ends_with('x') && b.ends_with('y') && a.starts_with('A')));
    assert_eq!(trace.requests.len(), 4 + 2 + 5 + 1);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.errors[0].line, 18);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn duration_draws_follow_the_percentiles() {
    let p = [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0];
    assert_eq!(draw_duration(&p, 0.5), 50.0);
    assert_eq!(draw_duration(&p, 0.0), 0.0);
    assert_eq!(draw_duration(&p, 1.0), 100.0);
    assert!((draw_duration(&p, 0.6) - 60.0).abs() < 1e-9);
}

mod fuzz {
    use super::super::*;
    use baton_core::TdgConfig;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Arbitrary 2021 rows and 2019 counts never panic (huge minutes and counts too).
        #[test]
        fn arbitrary_rows_never_panic(
            rows in proptest::collection::vec((".{0,4}", ".{0,4}", ".{0,8}", ".{0,8}"), 0..20),
            minute in prop_oneof![Just("480".to_owned()), Just("18446744073709551615".to_owned()), "[0-9]{1,3}_minute"],
            count in prop_oneof![Just("3".to_owned()), Just("-1".to_owned()), Just("x".to_owned()), Just("999999999999999".to_owned())],
        ) {
            let dir = std::env::temp_dir().join(format!("baton-azure-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut text = String::from("app,func,end_timestamp,duration\n");
            for (app, func, end, duration) in rows {
                text.push_str(&format!("{app},{func},{end},{duration}\n"));
            }
            let path = dir.join("t2021.csv");
            std::fs::write(&path, text).unwrap();
            let mut tdg = Tdg::new(TdgConfig::default());
            let mut report = ReadReport::default();
            let _ = read_azure2021(&path, &AzureOptions::default(), &mut tdg, &mut report);
            let path = dir.join("x_invocations.csv");
            std::fs::write(&path, format!("HashOwner,HashApp,HashFunction,Trigger,{minute}\no,a,f,http,{count}\n")).unwrap();
            let mut report = ReadReport::default();
            let _ = read_azure2019(&path, None, None, &AzureOptions::default(), &mut tdg, &mut report);
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}
