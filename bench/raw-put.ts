// The baseline for "one big layer": a single PutObject of a file's bytes with @aws-sdk/client-s3 and nothing else —
// no hashing, no checksums (`requestChecksumCalculation: WHEN_REQUIRED`), no retries. Run as its own process
// (`node --import tsx bench/raw-put.ts FILE BUCKET KEY`, endpoint and keys from AWS_*), so its wall time includes a
// Node start just as `transship copy`'s does. Prints `{"bytes":…,"elapsedMs":…}` (elapsed = the PutObject alone).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';

const [file, bucket, key] = process.argv.slice(2);
if (!file || !bucket || !key) {
  process.stderr.write('usage: raw-put.ts FILE BUCKET KEY\n');
  process.exit(2);
}
const { size } = await stat(file);
const client = new S3Client({
  endpoint: process.env.AWS_ENDPOINT_URL_S3,
  region: process.env.AWS_REGION ?? 'us-east-1',
  forcePathStyle: true,
  maxAttempts: 1,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
});
const started = process.hrtime.bigint();
await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: createReadStream(file), ContentLength: size, ContentType: 'application/octet-stream' }));
const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
client.destroy();
process.stdout.write(`${JSON.stringify({ bytes: size, elapsedMs })}\n`);
