# Sensitive namespaces: their values are shown to operators only, each read audited.

from django.db import migrations, models

# The runbook's sensitive namespaces (continuity.seed): Lucia's operator sessions and distress
# state. A database seeded before this field existed gets them marked too; any other
# namespace stays as it was, for an operator to mark.
SEEDED_SENSITIVE = ("session", "distress")


def mark_seeded(apps, schema_editor):
    Namespace = apps.get_model("continuity", "Namespace")
    Namespace.objects.filter(name__in=SEEDED_SENSITIVE).update(sensitive=True)


class Migration(migrations.Migration):

    dependencies = [
        ('continuity', '0018_purge_scope_estimates'),
    ]

    operations = [
        migrations.AddField(
            model_name='namespace',
            name='sensitive',
            field=models.BooleanField(default=False, help_text="Its values are sensitive: viewers see a key's metadata only, and an operator's every read of a value is audited."),
        ),
        migrations.RunPython(mark_seeded, migrations.RunPython.noop),
    ]
