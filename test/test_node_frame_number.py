"""Localization mode: query_id is the image's number among those the node received (how a player
matches answers to images that carry no stamp of their own)."""

from ros_helpers import Client, image_msg, overrides, ros_context, spin_until
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from structvpr_core.data.images import read_rgb
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_ros.node import StructVPRNode
from structvpr_ros.stamps import stamp_to_ns


def test_query_id_counts_every_received_image_and_unstamped_answers_carry_the_arrival_time(shared, tmp_path):
    frames = [read_rgb(shared / f"data/nordland64/summer/images-{f:05d}.png") for f in (29000, 29010, 29020)]
    encoder = RawPixelEncoder()
    db = MapDatabase(ModelIdentity.of_encoder(encoder))
    db.add_batch(encoder.encode(frames), [1, 2, 3], ["camera"] * 3, [None] * 3, None, ["a", "b", "c"])
    db.save(tmp_path / "map")
    with ros_context() as context:
        node = StructVPRNode(context=context, parameter_overrides=overrides(
            mode="localization", map_dir=str(tmp_path / "map"), model="raw-pixel", image_topic="image",
            keyframe_min_interval_s=0.0, score_threshold=-1.0, sequence_length=1, verification="off"))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = Client(context, executor)
        client.wait_connected()
        good = image_msg(frames[1], 5_000_000_000)
        client.image_pub.publish(Image(header=good.header, height=good.height, width=good.width, encoding="rgb8",
                                       step=good.step - 1, data=bytes((good.step - 1) * good.height)))
        spin_until(executor, lambda: node.stats.invalid == 1, 10, "the invalid image")
        first = client.send_image(good)
        assert first.query_id == 1 and first.candidates[0].map_id == 1  # image #0 was invalid: a gap
        unstamped = image_msg(frames[2], 0)
        client.image_pub.publish(unstamped)
        spin_until(executor, lambda: len(client.loop_closures) == 2, 10, "the unstamped image's answer")
        answer = client.loop_closures[1]
        assert answer.query_id == 2 and answer.candidates[0].map_id == 2
        assert stamp_to_ns(answer.header.stamp) > 0  # the node's arrival time, not 0
        node.destroy_node()
