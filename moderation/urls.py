from django.urls import path

from moderation import replay_views, review_queue, views, webhook_views
from moderation.api import api

app_name = "moderation"
urlpatterns = [
    path("api/v1/", api.urls),
    path("items/", views.items_list, name="items"),
    path("items/<int:item_id>/", views.item_detail, name="item"),
    path("items/<int:item_id>/explanation/", views.item_explanation, name="item-explanation"),
    path("review/", views.review_home, name="review"),
    path("review/next/", views.review_next, name="review-next"),
    path("review/agreement/", views.review_agreement, name="review-agreement"),
    path("review/queue/", review_queue.queue_list, name="review-queue"),
    path("review/<int:task_id>/pick/", review_queue.queue_pick, name="review-pick"),
    path("review/<int:task_id>/", views.review_task, name="review-task"),
    path("review/<int:task_id>/decide/", views.review_decide, name="review-decide"),
    path("review/<int:task_id>/release/", views.review_release, name="review-release"),
    path("policies/<slug:slug>/replays/", replay_views.replay_start, name="replay-start"),
    path("replays/<int:pk>/", replay_views.replay_detail, name="replay"),
    path("replays/<int:pk>/allow/", replay_views.replay_allow, name="replay-allow"),
    path("api-keys/", views.api_keys, name="api-keys"),
    path("api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path("api-keys/<int:key_id>/webhook/", webhook_views.deliveries, name="webhook-deliveries"),
    path(
        "api-keys/<int:key_id>/webhook/deliveries/<int:delivery_id>/redeliver/",
        webhook_views.redeliver,
        name="webhook-redeliver",
    ),
]
