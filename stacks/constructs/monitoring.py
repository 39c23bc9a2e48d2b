"""Monitoring: an SNS topic, alarms for every function, API and queue, and one dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from contract.limits import ALARM_STATUS_ALARMS
from stacks.config import AlarmThresholds

PERIOD = Duration.minutes(1)


@dataclass(frozen=True, kw_only=True)
class MonitoringProps:
    alarm_email: str | None
    metrics_namespace: str
    service_name: str
    topic: sns.ITopic | None = None  # a model's stack: the app's alarm topic; None: create it here


class Monitoring(Construct):
    """Alarms go to ``topic``; every ``watch_*`` call adds alarms and dashboard widgets.

    The app's Monitoring creates the topic (and its key) and the overview dashboard; each model's
    stack has a Monitoring of its own on that topic, with its own dashboard (CloudWatch allows 500
    widgets a dashboard, and a model adds 13). Attributes: ``topic``, ``dashboard``, ``alarms``
    (id -> alarm), ``health`` (after ``finish(health=True)``: one composite alarm of them all).
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: MonitoringProps) -> None:
        super().__init__(scope, construct_id)
        self._props = props
        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.alarms: dict[str, cw.Alarm] = {}
        self.health: cw.CompositeAlarm | None = None
        self.topic = props.topic or self._topic(props)
        self._action = actions.SnsAction(self.topic)

    def _topic(self, props: MonitoringProps) -> sns.Topic:
        # A customer-managed key: CloudWatch alarms cannot publish to a topic under the AWS-managed
        # SNS key, whose policy cannot grant the CloudWatch service principal any use of it.
        self.key = kms.Key(self, "AlarmKey", enable_key_rotation=True, description="onnxfn alarm topic")
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        topic = sns.Topic(self, "Alarms", display_name="onnxfn alarms", master_key=self.key, enforce_ssl=True)
        if props.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(props.alarm_email))
        return topic

    def _alarm(
        self, alarm_id: str, metric: cw.Metric | cw.MathExpression, threshold: float, description: str
    ) -> cw.Alarm:
        alarm = metric.create_alarm(
            self,
            alarm_id,
            threshold=threshold,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[alarm_id] = alarm
        return alarm

    def watch_function(
        self,
        label: str,
        function: lambda_.IFunction,
        *,
        timeout_s: int,
        concurrency_limit: int | None,
        thresholds: AlarmThresholds,
    ) -> list[cw.Alarm]:
        """Errors, throttles, p99 duration against the timeout, and concurrency near
        ``concurrency_limit`` (its reserve or the account's quota); None for a function its queue
        holds to a maximum concurrency, which a backlog reaches by design (its queue's age is watched)."""
        errors = function.metric_errors(period=PERIOD, statistic="Sum")
        throttles = function.metric_throttles(period=PERIOD, statistic="Sum")
        duration = function.metric_duration(period=PERIOD, statistic="p99")
        concurrency = function.metric("ConcurrentExecutions", period=PERIOD, statistic="Maximum")
        alarms = [
            self._alarm(f"{label}Errors", errors, thresholds.errors, f"{label}: invocation errors"),
            self._alarm(f"{label}Throttles", throttles, thresholds.throttles, f"{label}: throttled invocations"),
            self._alarm(
                f"{label}DurationP99",
                duration,
                timeout_s * 1000 * thresholds.duration_p99_ratio,
                f"{label}: p99 duration at {thresholds.duration_p99_ratio:.0%} of the {timeout_s} s timeout",
            ),
        ]
        if concurrency_limit is not None:
            alarms.append(
                self._alarm(
                    f"{label}Concurrency",
                    concurrency,
                    max(1, int(concurrency_limit * thresholds.concurrency_ratio)),
                    f"{label}: concurrency at {thresholds.concurrency_ratio:.0%} of its limit ({concurrency_limit})",
                )
            )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title=f"{label} invocations / errors / throttles",
                left=[function.metric_invocations(period=PERIOD), errors, throttles],
                width=12,
            ),
            cw.GraphWidget(
                title=f"{label} duration p50 / p99 (ms)",
                left=[function.metric_duration(period=PERIOD, statistic="p50"), duration],
                width=12,
            ),
        )
        return alarms

    def watch_model_loads(self, label: str, thresholds: AlarmThresholds, *, service: str) -> cw.Alarm:
        """The handlers' own ``ModelLoadFailures`` metric (EMF, Powertools) for one model's ``service``."""
        failures = cw.Metric(
            namespace=self._props.metrics_namespace,
            metric_name="ModelLoadFailures",
            dimensions_map={"service": service},
            period=PERIOD,
            statistic="Sum",
        )
        load_ms = cw.Metric(
            namespace=self._props.metrics_namespace,
            metric_name="ModelLoadMs",
            dimensions_map={"service": service},
            period=PERIOD,
            statistic="p99",
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title=f"{label} model loads: failures / p99 ms", left=[failures], right=[load_ms], width=24)
        )
        return self._alarm(
            f"{label}ModelLoadFailures",
            failures,
            thresholds.model_load_failures,
            f"{label}: the model could not be loaded",
        )

    def watch_api(self, label: str, api: apigw.RestApi, thresholds: AlarmThresholds) -> list[cw.Alarm]:
        """5XX count, 4XX rate, p99 latency."""
        server = api.metric_server_error(period=PERIOD, statistic="Sum")
        client_rate = api.metric_client_error(period=PERIOD, statistic="Average")
        latency = api.metric_latency(period=PERIOD, statistic="p99")
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title=f"{label} requests / 4XX / 5XX",
                left=[api.metric_count(period=PERIOD), api.metric_client_error(period=PERIOD), server],
                width=12,
            ),
            cw.GraphWidget(title=f"{label} latency p99 (ms)", left=[latency], width=12),
        )
        return [
            self._alarm(f"{label}5XX", server, thresholds.api_5xx, f"{label}: server errors"),
            self._alarm(
                f"{label}4XXRate",
                client_rate,
                thresholds.api_4xx_rate,
                f"{label}: client error rate at {thresholds.api_4xx_rate:.0%}",
            ),
            self._alarm(
                f"{label}LatencyP99",
                latency,
                thresholds.api_latency_p99_ms,
                f"{label}: p99 latency over {thresholds.api_latency_p99_ms} ms",
            ),
        ]

    def watch_queue(
        self, label: str, queue: sqs.IQueue, dead_letters: sqs.IQueue, thresholds: AlarmThresholds
    ) -> list[cw.Alarm]:
        """Messages in the dead-letter queue; age of the oldest message."""
        dlq_visible = dead_letters.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        age = queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum")
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title=f"{label} visible / in flight",
                left=[
                    queue.metric_approximate_number_of_messages_visible(period=PERIOD),
                    queue.metric_approximate_number_of_messages_not_visible(period=PERIOD),
                ],
                width=8,
            ),
            cw.GraphWidget(title=f"{label} oldest message age (s)", left=[age], width=8),
            cw.GraphWidget(title=f"{label} dead letters", left=[dlq_visible], width=8),
        )
        return [
            self._alarm(f"{label}DeadLetters", dlq_visible, thresholds.dlq_messages, f"{label}: messages in the DLQ"),
            self._alarm(
                f"{label}OldestMessage",
                age,
                thresholds.queue_age_s,
                f"{label}: oldest message older than {thresholds.queue_age_s} s",
            ),
        ]

    def watch_state_machine(
        self, label: str, state_machine: sfn.StateMachine, dead_letters: sqs.IQueue, thresholds: AlarmThresholds
    ) -> list[cw.Alarm]:
        """Executions that failed, timed out or were aborted, and those waiting in its dead-letter queue."""
        failed = cw.MathExpression(
            # a metric Step Functions emits only when it happens: no data is 0, not a missing sum
            expression="FILL(failed, 0) + FILL(timedOut, 0) + FILL(aborted, 0)",
            using_metrics={
                "failed": state_machine.metric_failed(period=PERIOD, statistic="Sum"),
                "timedOut": state_machine.metric_timed_out(period=PERIOD, statistic="Sum"),
                "aborted": state_machine.metric_aborted(period=PERIOD, statistic="Sum"),
            },
            label="failed, timed out or aborted",
            period=PERIOD,
        )
        dead = dead_letters.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title=f"{label} executions started / succeeded / failed",
                left=[
                    state_machine.metric_started(period=PERIOD, statistic="Sum"),
                    state_machine.metric_succeeded(period=PERIOD, statistic="Sum"),
                    failed,
                ],
                width=12,
            ),
            cw.GraphWidget(title=f"{label} failed executions queued", left=[dead], width=12),
        )
        return [
            self._alarm(
                f"{label}ExecutionsFailed", failed, thresholds.errors, f"{label}: executions that did not succeed"
            ),
            self._alarm(
                f"{label}FailedExecutions", dead, thresholds.dlq_messages, f"{label}: failed executions in the queue"
            ),
        ]

    def finish(self, *, health: str | None = None, summaries: tuple[cw.IAlarm, ...] = ()) -> None:
        """Add the alarm status widgets once every alarm exists: this stack's alarms, then ``summaries``
        (the models' health alarms, on the overview). ``health``: also one composite alarm, in alarm
        when any of this stack's alarms is, named by ``health``, with no action of its own (each alarm
        notifies the topic already)."""
        alarms: list[cw.IAlarm] = list(self.alarms.values())
        if health is not None and alarms:
            self.health = cw.CompositeAlarm(
                self,
                "Health",
                alarm_rule=cw.AlarmRule.any_of(*alarms),
                alarm_description=f"{health}: any of its {len(alarms)} alarms",
            )
        for title, group in (("alarms", alarms), ("models", list(summaries))):
            # an alarm status widget shows at most 100 alarms
            for start in range(0, len(group), ALARM_STATUS_ALARMS):
                part = f" ({start // ALARM_STATUS_ALARMS + 1})" if len(group) > ALARM_STATUS_ALARMS else ""
                self.dashboard.add_widgets(
                    cw.AlarmStatusWidget(
                        title=f"{title}{part}", alarms=group[start : start + ALARM_STATUS_ALARMS], width=24
                    )
                )
