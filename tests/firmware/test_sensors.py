"""Sensor adapters under MicroPython, through node/hw.py and the unix-port hardware fakes."""

from pathlib import Path

from tests.support.micropython import run_mp


def test_every_sensor_kind_reads_through_hw(tmp_path: Path) -> None:
    """sim, DHT22, DS18B20, BME280 (datasheet calibration example) and ADC give values with
    their fixed decimals; a missing I2C device and an unknown pin name are clear errors."""
    lines = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in run_mp("sensors_probe.py", tmp_path).splitlines()
    }
    assert lines["dht22"].startswith("temp,hum 22.")
    assert lines["ds18b20"].startswith("water 19.")
    # Bosch BME280 datasheet, section 8.2 example: 25.08 C and 100653 Pa.
    temp, hum, press = lines["bme280"].split(" ")[1].split(",")
    assert lines["bme280"].startswith("temp,hum,press ")
    assert temp == "25.08" and press == "1006.5" and 0 <= float(hum) <= 100
    name, value = lines["adc"].split(" ")
    assert name == "light" and 21.0 <= float(value) <= 23.0  # 1.0 + 0.001 * 20000..22000
    assert lines["sim"].startswith("temp ")
    assert lines["bme280@0x77"] == "OSError 19"  # ENODEV
    assert lines["bad-pin"] == "ValueError sensor pin 'nope' is not in the board's pins"
