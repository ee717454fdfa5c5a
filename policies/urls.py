from django.urls import path

from policies import draft_views, views
from policies.settings_view import policy_settings, review_budget

app_name = "policies"
urlpatterns = [
    path("", views.policy_list, name="list"),
    path("new/", views.policy_create, name="create"),
    path("import/", views.policy_import, name="import"),
    path("<slug:slug>/", views.policy_detail, name="detail"),
    path("<slug:slug>/import/", views.policy_import, name="import-into-draft"),
    path("<slug:slug>/settings/", policy_settings, name="settings"),
    path("<slug:slug>/review-budget/", review_budget, name="review-budget"),
    path("<slug:slug>/export/", views.export_version, name="export"),
    path("<slug:slug>/diff/", views.diff_view, name="diff"),
    path("<slug:slug>/model-input/", views.model_input_view, name="model-input"),
    path("<slug:slug>/console/", views.console_run, name="console"),
    path("<slug:slug>/versions/<int:number>/", views.version_detail, name="version"),
    path("<slug:slug>/versions/<int:number>/rollback/", views.rollback, name="rollback"),
    path("<slug:slug>/draft/", draft_views.draft_editor, name="editor"),
    path("<slug:slug>/draft/status/", draft_views.draft_status, name="draft-status"),
    path("<slug:slug>/draft/header/", draft_views.draft_header, name="draft-header"),
    path("<slug:slug>/draft/discard/", draft_views.draft_discard, name="draft-discard"),
    path("<slug:slug>/draft/publish/", views.publish, name="publish"),
    path("<slug:slug>/draft/categories/", draft_views.category_add, name="category-add"),
    path("<slug:slug>/draft/categories/<int:pk>/", draft_views.category_row, name="category-row"),
    path("<slug:slug>/draft/categories/<int:pk>/edit/", draft_views.category_edit, name="category-edit"),
    path("<slug:slug>/draft/categories/<int:pk>/delete/", draft_views.category_delete, name="category-delete"),
    path("<slug:slug>/draft/categories/<int:pk>/move/", draft_views.category_move, name="category-move"),
]
