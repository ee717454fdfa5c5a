"""Review tasks name the text they are about and its P(unsafe) (the queue's score); decisions
record which text each violated category was chosen for. Existing rows are filled in: a task
from its verdict, a decision's categories go to the text(s) it labelled unsafe."""

from django.db import migrations, models


def _task_field(verdict, has_response: bool) -> tuple[str, float | None]:
    probabilities, thresholds = verdict.probabilities or {}, verdict.thresholds or {}
    labels = {"prompt": verdict.prompt_label, "response": verdict.response_label}
    scores = {}
    for name in ("prompt", "response"):
        distribution = probabilities.get(name)
        if isinstance(distribution, dict) and isinstance(distribution.get("unsafe"), int | float):
            scores[name] = (float(distribution["unsafe"]), float(thresholds.get(name, 0.5)))
    unsafe = [name for name in scores if labels[name] == "unsafe"]
    if unsafe:
        name = max(unsafe, key=lambda n: scores[n][0])
        return name, scores[name][0]
    if scores:
        name = min(scores, key=lambda n: abs(scores[n][0] - scores[n][1]))
        return name, scores[name][0]
    if has_response and verdict.prompt_label == "unsafe" and verdict.response_label != "unsafe":
        return "prompt", None
    return ("response" if has_response else "prompt"), verdict.confidence


def fill_in(apps, schema_editor) -> None:
    ReviewTask = apps.get_model("moderation", "ReviewTask")
    Decision = apps.get_model("moderation", "Decision")
    for task in ReviewTask.objects.select_related("item__verdict").iterator(chunk_size=500):
        verdict = getattr(task.item, "verdict", None)
        if verdict is None:
            continue
        has_response = bool(task.item.response and task.item.response.strip())
        field, score = _task_field(verdict, has_response)
        ReviewTask.objects.filter(pk=task.pk).update(field=field, score=score)
    for decision in Decision.objects.exclude(categories=[]).iterator(chunk_size=500):
        codes = list(decision.categories)
        fields = {}
        if decision.prompt_label == "unsafe":
            fields["prompt_categories"] = codes
        if decision.response_label == "unsafe":
            fields["response_categories"] = codes
        if fields:
            Decision.objects.filter(pk=decision.pk).update(**fields)


class Migration(migrations.Migration):

    dependencies = [
        ("moderation", "0004_webhook_deliveries"),
    ]

    operations = [
        migrations.AddField(
            model_name="decision",
            name="prompt_categories",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="decision",
            name="response_categories",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="reviewtask",
            name="field",
            field=models.CharField(blank=True, default="", max_length=10),
        ),
        migrations.AddField(
            model_name="reviewtask",
            name="score",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.RunPython(fill_in, migrations.RunPython.noop),
    ]
