from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tuning", "0004_trial_end_reason_job_cancelled_by"),
    ]

    operations = [
        migrations.AddField(
            model_name="trial",
            name="node",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
