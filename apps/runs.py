"""Runs: every run directory with its lineage graph, loss / validation-loss / reward-accuracy / KL curves, win-rate
and forgetting figures from `eval.json`, and a diff of two runs' configs.

A page of the playground app (apps/playground.py); also runs alone (`streamlit run apps/runs.py`). The data comes
from `alignkit/dashboard.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from alignkit import dashboard


def main() -> None:
    st.title("Runs")
    runs_dir = st.text_input("Runs directory", value=os.environ.get("ALIGNKIT_RUNS_DIR", "runs"), key="runs_dir_page")
    rows = dashboard.run_rows(runs_dir)
    if not rows:
        st.info(f"No runs in `{runs_dir}/` yet: train one with `alignkit sft` (or `alignkit demo`).")
        return
    table = pd.DataFrame(rows).drop(columns=["path", "base"], errors="ignore")
    st.dataframe(table, hide_index=True, width="stretch")

    st.subheader("Lineage")
    st.graphviz_chart(dashboard.lineage_dot(rows))

    by_name = {r["run"]: r["path"] for r in rows if r["status"] != "broken"}
    st.subheader("Curves")
    picked = st.multiselect("Runs to plot", list(by_name), default=list(by_name)[-3:], key="curve_runs")
    found = dashboard.curves([by_name[name] for name in picked])
    if not found:
        st.caption("No logged metrics for these runs.")
    for column, (name, per_run) in zip(st.columns(2) * len(found), found.items(), strict=False):
        with column:
            st.markdown(f"**{name}**")
            frame = pd.DataFrame(
                [{"step": step, "run": run, name: value} for run, points in per_run.items() for step, value in points]
            )
            st.line_chart(frame.pivot_table(index="step", columns="run", values=name), x_label="step")

    st.subheader("Evaluation")
    eval_dir = st.text_input("Eval directory", value=os.environ.get("ALIGNKIT_EVAL_DIR", "eval"), key="eval_dir")
    results = dashboard.eval_results([eval_dir, runs_dir, *by_name.values()])
    if not results:
        st.caption(f"No eval.json in `{eval_dir}/` or the run directories: run `alignkit eval --runs A --runs B`.")
    for path, result in results:
        per_run, comparisons = dashboard.eval_tables(result)
        st.markdown(f"`{path}`")
        if comparisons:
            st.dataframe(pd.DataFrame(comparisons), hide_index=True, width="stretch")
        if per_run:
            st.dataframe(pd.DataFrame(per_run), hide_index=True, width="stretch")

    st.subheader("Config diff")
    if len(by_name) < 2:
        st.caption("Two runs are needed for a diff.")
        return
    names = list(by_name)
    left, right = st.columns(2)
    first = left.selectbox("Run A", names, index=len(names) - 2, key="diff_a")
    second = right.selectbox("Run B", names, index=len(names) - 1, key="diff_b")
    try:
        diff = dashboard.config_diff(by_name[first], by_name[second])
    except OSError as exc:
        st.error(f"cannot read a config.yaml ({exc}) — fix: pick runs with a config.yaml")
        return
    if diff:
        st.dataframe(pd.DataFrame(diff).astype(str), hide_index=True, width="stretch")
    else:
        st.caption("The two configs are identical.")
    with st.expander("Both configs"):
        a, b = st.columns(2)
        a.code((Path(by_name[first]) / "config.yaml").read_text(encoding="utf-8"), language="yaml")
        b.code((Path(by_name[second]) / "config.yaml").read_text(encoding="utf-8"), language="yaml")


main()
