"""The tool survey and the stack checker of chapters 11 and 12 (`mlops_course.landscape`): the survey is consistent,
every scenario can be met from it, and `review_stack` finds each missing key point — a missing category, a tool
without the property a constraint needs, a constraint nobody cites — while a reasoned stack passes."""
import pytest

from mlops_course.core import WorkbenchError
from mlops_course.landscape import (CATEGORIES, CONSTRAINTS, PROPERTIES, SCENARIOS, TOOLS, Scenario, _fitting, categories,
                                    find_tool, plot_landscape, review_stack, survey, workbench_stack)


def _reasoned(scenario: str, pick=lambda names: names[0]) -> dict:
    "A stack for `scenario`: a fitting tool per category, citing every constraint that touches the category."
    sc = SCENARIOS[scenario]
    return {cat: (pick(names), [k for k in sc.constraints if cat in CONSTRAINTS[k].needs])
            for cat, names in _fitting(scenario).items()}


def test_the_survey_is_consistent_and_covers_every_category():
    for t in TOOLS:
        assert t.categories and set(t.categories) <= set(CATEGORIES), t.name
        assert t.properties <= set(PROPERTIES), t.name
        assert t.source.startswith("https://") and t.does and t.choose_when, t.name
    for k in CATEGORIES:
        tools = [t for t in TOOLS if k in t.categories]
        assert any("open-source" in t.properties for t in tools) and any("managed" in t.properties for t in tools), k
        assert workbench_stack()[k], f"no workbench tool for {k}"
        assert all(find_tool(k, t.name) is t for t in tools)  # no two tools of a category answer to one name
    table = survey(side="DataOps")
    assert set(table.category) == set(categories("DataOps")) and table["source"].str.startswith("https://").all()
    with pytest.raises(WorkbenchError, match="unknown category 'serve'.*valid ones are: notebooks"):
        survey("serve")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_is_met_by_a_reasoned_stack_of_fitting_tools(scenario):
    fits = _fitting(scenario)
    assert fits and all(fits.values())
    for pick in (lambda names: names[0], lambda names: names[-1]):
        found = review_stack(_reasoned(scenario, pick), scenario)
        assert found.empty, found.to_dict("records")


def test_naming_the_right_tools_without_reasons_is_not_enough():
    sc = SCENARIOS["clinic"]
    bare = {cat: tool for cat, (tool, _) in _reasoned("clinic").items()}
    found = review_stack(bare, "clinic")
    assert set(found.constraint) == set(sc.constraints) and (found.category == "").all()
    assert found.finding.str.contains("no choice gives 'regulated' as a reason").any()


def test_a_tool_without_the_property_a_constraint_needs_is_named_with_the_constraint():
    stack = _reasoned("fraud")
    stack["serving"] = ("Workbench model server", ["low_latency", "cloud_managed"])  # online, but nobody runs it for you
    stack["monitoring"] = ("Evidently", ["live_alerts", "cloud_managed"])            # batch reports, no live alerting
    found = review_stack(stack, "fraud")
    pairs = set(zip(found.category, found.tool, found.constraint))
    assert pairs == {("serving", "Workbench model server", "cloud_managed"), ("monitoring", "Evidently", "live_alerts")}
    assert found.finding.str.contains("Evidently lacks 'live'").any()


def test_on_premises_rules_out_a_vendor_service_as_what_makes_a_tool_light_to_run():
    # Weights & Biases can be self-managed (on Kubernetes) or hosted: either is fine alone, not both constraints at once
    alone = review_stack({"tracking": ("Weights & Biases", ["small_team"])}, Scenario("t", "", ("tracking",), ("small_team",)))
    assert alone.empty
    both = review_stack({"notebooks": ("JupyterHub", ["many_users", "on_premises", "small_team"]), "compute": "Dask",
                         "tracking": ("Weights & Biases", ["many_users"])}, "lab")
    row = both[both.category == "tracking"]
    assert row.constraint.tolist() == ["small_team"] and "only as a vendor's managed service, which 'on_premises' rules out" in row.finding.iloc[0]


def test_wrong_category_unknown_tool_missing_choice_and_foreign_reasons_are_findings():
    found = review_stack({"tracking": ("MLflow", ["on_premises", "small_team", "latency"]), "pipelines": "Dask",
                          "registry": "cron", "serving": None}, "classroom")
    text = " | ".join(found.finding)
    assert "'latency' is not a constraint of this scenario" in text
    assert "'Dask' is not surveyed as a tool for pipelines (Orchestration of ML pipelines); it is surveyed under: compute, query" in text
    assert "'cron' is not surveyed as a tool for registry" in text
    assert {"serving", "notebooks", "monitoring", "compute"} <= set(found[found.finding.str.startswith("no tool chosen")].category)


@pytest.mark.parametrize("bad, message", [
    (None, "the stack must be a dict category -> choice"),
    (["MLflow"], "the stack must be a dict"),
    ({"trackign": "MLflow"}, "unknown category 'trackign' in the stack"),
    ({"tracking": 3}, r"stack\['tracking'\] = 3: give a tool name"),
    ({"tracking": ("MLflow", "on_premises", "why", "extra")}, r"stack\['tracking'\]"),
    ({"tracking": ("MLflow", [1])}, "the reasons must be a list of constraint keys"),
])
def test_a_stack_that_is_not_a_stack_is_a_clear_error(bad, message):
    with pytest.raises(WorkbenchError, match=message):
        review_stack(bad, "classroom")
    with pytest.raises(WorkbenchError, match="unknown scenario 'clinc'; valid ones are: classroom"):
        review_stack({}, "clinc")


def test_choices_are_accepted_as_a_name_a_pair_or_a_dict():
    forms = {"notebooks": "jupyterlab", "tracking": ("ML flow", "on_premises"),
             "registry": {"tool": "MLflow", "because": ["small_team"], "why": "one store with tracking"}}
    found = review_stack(forms, "classroom")
    assert found.finding.str.startswith("no tool chosen").all()      # every form understood, every tool fits, both constraints cited
    assert set(found.category) == {"serving", "monitoring", "compute", "pipelines"}


def test_the_figure_marks_the_categories_with_findings():
    stack = {**workbench_stack("MLOps"), "serving": "Amazon SageMaker AI endpoints"}
    fig = plot_landscape("MLOps", stack, scenario="classroom")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "✗ on_premises, small_team" in texts and "Amazon SageMaker AI endpoints" in texts
    red = [p for p in fig.axes[0].patches if p.get_edgecolor()[:3] == pytest.approx((0xb0 / 255, 0x4a / 255, 0x4a / 255))]
    assert len(red) == 1  # only the serving box
    plain = plot_landscape("DataOps")
    assert "mlops_course.validation" in {t.get_text() for t in plain.axes[0].texts}


# the exercises' answers (chapters 11 and 12): one tool per category that fits every constraint of the scenario
SOLUTION_TOOLS = {
    "clinic": {"tracking": "MLflow", "registry": "MLflow", "pipelines": "Apache Airflow", "serving": "Workbench model server",
               "monitoring": "Evidently"},
    "fraud": {"registry": "Amazon SageMaker Model Registry", "serving": "Amazon SageMaker AI endpoints",
              "monitoring": "Prometheus + Grafana", "compute": "Amazon SageMaker AI training jobs"},
    "credit": {"validation": "Great Expectations", "versioning": "DVC", "orchestration": "Dagster", "lineage": "OpenLineage + Marquez"},
}


@pytest.mark.parametrize("scenario", sorted(SOLUTION_TOOLS))
def test_citing_every_constraint_on_every_choice_is_refused(scenario):
    "Right tools, every constraint cited everywhere: each reason that does not bear on its category is a finding; the relevant ones pass."
    sc = SCENARIOS[scenario]
    everything = {cat: (tool, list(sc.constraints)) for cat, tool in SOLUTION_TOOLS[scenario].items()}
    found = review_stack(everything, scenario)
    irrelevant = {(cat, k) for cat in sc.categories for k in sc.constraints if cat not in CONSTRAINTS[k].needs}
    assert irrelevant and set(zip(found.category, found.constraint)) == irrelevant, found.to_dict("records")
    assert found.finding.str.contains("does not bear on").all()
    relevant = {cat: (tool, [k for k in sc.constraints if cat in CONSTRAINTS[k].needs]) for cat, tool in SOLUTION_TOOLS[scenario].items()}
    assert review_stack(relevant, scenario).empty


def test_a_reason_cited_only_where_it_does_not_bear_does_not_count_as_cited():
    "'regulated' given for serving only: a finding there, and the registry still lacks the reason."
    stack = {"tracking": ("MLflow", ["on_premises", "small_team"]), "registry": ("MLflow", ["on_premises"]),
             "pipelines": ("Apache Airflow", ["nightly_batch"]), "serving": ("Workbench model server", ["regulated", "nightly_batch"]),
             "monitoring": "Evidently"}
    found = review_stack(stack, "clinic")
    assert ("serving", "regulated") in set(zip(found.category, found.constraint))
    assert found.finding.str.contains("no choice gives 'regulated' as a reason").any()
