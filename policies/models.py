"""Policies: a policy has one editable draft and immutable published versions."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from guard.contract import CategorySpec, PolicySpec

# A category code is what the model writes in its answer: short, no spaces, no commas.
CODE_PATTERN = r"[A-Za-z0-9_-]{1,40}"


class Policy(models.Model):
    class Explain(models.TextChoices):
        OFF = "off", "off"
        FLAG_BLOCK = "flag_block", "flagged and blocked items"
        ALL = "all", "all items"

    class ReviewBudget(models.TextChoices):
        FIXED = "fixed", "no budget: the fixed uncertain band"
        PER_DAY = "per_day", "items a day"
        SHARE = "share", "a share of traffic"

    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The model that judges this policy's traffic; null = the embedded default.
    production_model = models.ForeignKey("guard.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="production_for")
    # Which fast verdicts get an explanation written afterwards by a reason pass.
    explain = models.CharField(max_length=12, choices=Explain.choices, default=Explain.FLAG_BLOCK)
    # What the review team can take for this policy: the uncertain band (the P(unsafe) interval
    # around the threshold whose verdicts go to review) is sized to it (moderation.review_budget).
    # "fixed": no budget, the deployment's fixed band (MODERATION_UNCERTAIN_LOW/HIGH).
    review_budget = models.CharField(max_length=8, choices=ReviewBudget.choices, default=ReviewBudget.FIXED)
    review_items_per_day = models.PositiveIntegerField(null=True, blank=True)
    review_traffic_percent = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"
        constraints = [
            # Two policies with one name (in any case) cannot be told apart in lists, filters and the API.
            models.UniqueConstraint(Lower("name"), name="unique_policy_name_ci"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def review_budget_text(self) -> str:
        """The budget in words ("40 items a day", "2% of traffic"), "" without one."""
        if self.review_budget == self.ReviewBudget.PER_DAY and self.review_items_per_day:
            return f"{self.review_items_per_day} item{'s' if self.review_items_per_day != 1 else ''} a day"
        if self.review_budget == self.ReviewBudget.SHARE and self.review_traffic_percent:
            return f"{self.review_traffic_percent:g}% of traffic"
        return ""

    def explains(self, action: str) -> bool:
        """Whether a fast verdict with this action gets an explanation written afterwards."""
        if self.explain == self.Explain.ALL:
            return True
        return self.explain == self.Explain.FLAG_BLOCK and action in ("flag", "block")

    def latest_version(self) -> PolicyVersion | None:
        return self.versions.filter(number__isnull=False).order_by("-number").first()

    def draft(self) -> PolicyVersion:
        """The one editable draft; created from the latest version when missing."""
        existing = self.versions.filter(number__isnull=True).first()
        if existing:
            return existing
        try:
            with transaction.atomic():
                latest = self.latest_version()
                draft = PolicyVersion.objects.create(
                    policy=self,
                    number=None,
                    name=latest.spec_name if latest else self.name,
                    description=latest.spec_description if latest else self.description,
                )
                if latest:
                    draft.copy_categories_from(latest)
                return draft
        except IntegrityError:
            # Another request opened the draft at the same moment: use theirs.
            return self.versions.get(number__isnull=True)

    @classmethod
    @transaction.atomic
    def create_from_spec(
        cls,
        spec: PolicySpec,
        *,
        slug: str,
        name: str | None = None,
        description: str | None = None,
        owner: object | None = None,
        severity: str = "medium",
        action: str = "flag",
        preset: str | None = None,
    ) -> Policy:
        """A new policy whose draft holds ``spec``'s categories (nothing published yet).

        With ``preset`` each category gets that preset's severity and action
        (``presets.category_handling``); otherwise ``severity`` and ``action``.
        """
        from guard.serving import current_production
        from policies.presets import category_handling

        policy = cls.objects.create(
            slug=slug,
            name=name or spec.name,
            description=spec.description if description is None else description,
            owner=owner if getattr(owner, "pk", None) else None,
            # The production guard, so a promotion later moves this policy along with the others.
            production_model=current_production(),
        )
        draft = policy.draft()
        for position, category in enumerate(spec.categories):
            category_severity, category_action = category_handling(preset, category) if preset else (severity, action)
            Category.objects.create(
                version=draft,
                position=position,
                code=category.code,
                name=category.name,
                description=category.description,
                violating_examples=list(category.violating_examples),
                allowed_examples=list(category.allowed_examples),
                severity=category_severity,
                action=category_action,
            )
        return policy

    @transaction.atomic
    def publish(self, user: object | None = None, change_note: str = "") -> PolicyVersion:
        """Freeze the draft as version N+1 and open a fresh draft equal to it."""
        draft = PolicyVersion.objects.select_for_update().get(policy=self, number__isnull=True)
        if not draft.categories.exists():
            raise ValidationError("A policy version needs at least one category.")
        latest = self.latest_version()
        draft.number = (latest.number if latest else 0) + 1
        draft.change_note = change_note
        draft.published_at = timezone.now()
        draft.published_by = user if getattr(user, "pk", None) else None
        PolicyVersion.objects.filter(pk=draft.pk).update(
            number=draft.number, change_note=change_note, published_at=draft.published_at, published_by=draft.published_by
        )
        # The policy's display name and description follow its latest published version.
        Policy.objects.filter(pk=self.pk).update(name=draft.spec_name, description=draft.spec_description)
        self.name, self.description = draft.spec_name, draft.spec_description
        return draft

    @transaction.atomic
    def discard_draft_changes(self) -> PolicyVersion:
        """Make the draft equal to the latest published version again."""
        draft = self.draft()
        latest = self.latest_version()
        if latest is None:
            return draft
        draft.categories.all().delete()
        draft.copy_categories_from(latest)
        draft.name, draft.description = latest.spec_name, latest.spec_description
        draft.save(update_fields=["name", "description"])
        return draft

    @transaction.atomic
    def rollback_to(self, version: PolicyVersion, user: object | None = None) -> PolicyVersion:
        """A new published version equal to ``version`` (history is never rewritten)."""
        draft = self.draft()
        draft.categories.all().delete()
        draft.copy_categories_from(version)
        draft.name, draft.description = version.spec_name, version.spec_description
        draft.rollback_of = version
        draft.save(update_fields=["name", "description", "rollback_of"])
        return self.publish(user, change_note=f"Roll back to version {version.number}")


class PolicyVersion(models.Model):
    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    # null: the draft. Published versions are numbered 1, 2, ... and immutable.
    number = models.PositiveIntegerField(null=True, blank=True)
    # The policy's name and description as this version renders them for the
    # model: versioned, so renaming a policy never changes a published version.
    # Empty (rows older than these fields): fall back to the policy's.
    name = models.CharField(max_length=200, blank=True, default="")
    description = models.TextField(blank=True, default="")
    change_note = models.TextField(blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Set on a version published by a rollback: the older version it equals (the audit logs it as policy.rollback).
    rollback_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="unique_version_number"),
            models.UniqueConstraint(fields=["policy"], condition=models.Q(number__isnull=True), name="one_draft_per_policy"),
        ]

    def __str__(self) -> str:
        return f"{self.policy.slug}@{self.number if self.number else 'draft'}"

    @property
    def is_draft(self) -> bool:
        return self.number is None

    @property
    def label(self) -> str:
        return f"{self.policy.slug}@{self.number}" if self.number else f"{self.policy.slug}@draft"

    @property
    def spec_name(self) -> str:
        return self.name or self.policy.name

    @property
    def spec_description(self) -> str:
        return self.description if self.name else self.policy.description

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk and PolicyVersion.objects.filter(pk=self.pk, number__isnull=False).exists():
            raise ValidationError("Published policy versions are immutable.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:  # type: ignore[override]
        if self.number is not None:
            raise ValidationError("Published policy versions cannot be deleted.")
        return super().delete(*args, **kwargs)  # type: ignore[arg-type]

    def copy_categories_from(self, other: PolicyVersion) -> None:
        for category in other.categories.all():
            Category.objects.create(
                version=self,
                position=category.position,
                code=category.code,
                name=category.name,
                description=category.description,
                violating_examples=list(category.violating_examples),
                allowed_examples=list(category.allowed_examples),
                severity=category.severity,
                action=category.action,
            )

    def to_spec(self) -> PolicySpec:
        """What the guard sees of this version, with the policy's latest taught examples (read by the
        latent heads only; ``CategoryTeaching``)."""
        teaching = self.policy.teachings.order_by("-number").first()
        taught = teaching.examples if teaching is not None else {}
        return PolicySpec(
            name=self.spec_name,
            description=self.spec_description,
            categories=tuple(
                CategorySpec(
                    code=c.code,
                    name=c.name,
                    description=c.description,
                    violating_examples=tuple(c.violating_examples),
                    allowed_examples=tuple(c.allowed_examples),
                    taught_violating=tuple(taught.get(c.code, {}).get("violating", ())),
                    taught_allowed=tuple(taught.get(c.code, {}).get("allowed", ())),
                )
                for c in self.categories.order_by("position", "id")
            ),
        )


class CategoryTeaching(models.Model):
    """What reviewers' decisions taught a policy's categories: numbered, immutable snapshots
    (``trainer.teaching`` makes them). The latest one travels with every version's spec to the
    latent heads, which refit the taught categories in milliseconds; it is never rendered into
    the model's input. Examples: ``{code: {"violating": [texts], "allowed": [texts]}}``."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="teachings")
    number = models.PositiveIntegerField()
    based_on = models.ForeignKey(PolicyVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    examples = models.JSONField(default=dict, blank=True)
    reviewed_items = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["policy", "number"], name="teaching_number_per_policy")]

    def __str__(self) -> str:
        return f"teaching {self.number} of {self.policy.slug}"

    def counts(self) -> dict[str, tuple[int, int]]:
        return {code: (len(v.get("violating", [])), len(v.get("allowed", []))) for code, v in sorted(self.examples.items())}


class Category(models.Model):
    class Severity(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    class Action(models.TextChoices):
        BLOCK = "block"
        FLAG = "flag", "flag for review"
        ALLOW = "allow", "allow and log"

    version = models.ForeignKey(PolicyVersion, on_delete=models.CASCADE, related_name="categories")
    position = models.PositiveIntegerField(default=0)
    code = models.CharField(max_length=40)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    violating_examples = models.JSONField(default=list, blank=True)
    allowed_examples = models.JSONField(default=list, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.MEDIUM)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.FLAG)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["version", "code"], name="unique_code_per_version")]

    def __str__(self) -> str:
        return f"{self.code}: {self.name}"

    def _version_is_published(self) -> bool:
        return PolicyVersion.objects.filter(pk=self.version_id, number__isnull=False).exists()

    def save(self, *args: object, **kwargs: object) -> None:
        if self._version_is_published():
            raise ValidationError("Categories of a published policy version are immutable.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:  # type: ignore[override]
        if self._version_is_published():
            raise ValidationError("Categories of a published policy version are immutable.")
        return super().delete(*args, **kwargs)  # type: ignore[arg-type]
