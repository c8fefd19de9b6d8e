<?php
// Pull every pending event from relay with PHP's own SoapClient, the way integrations of the
// Pure360 do it: log in, getBatch with markAsReadInd = Y until a batch comes back empty,
// decode each batch's base64 CSV with its per-trigger headers, log out.
//
//   php pull.php http://127.0.0.1:8080/soap/pull?wsdl warehouse "$WAREHOUSE_TOKEN" [TRIGGERS]
//
// Prints one JSON object per event (the CSV row keyed by its trigger's header) on stdout.

[, $wsdl, $user, $password] = $argv;
$types = $argv[4] ?? 'DELIVERYSTART,DELIVERY,OPEN,CLICK,BOUNCE,BLOCKED,OPTIN,OPTOUT,SOFTBOUNCE,SMSOPTOUT,SMSFAILED';

$client = new SoapClient($wsdl, ['cache_wsdl' => WSDL_CACHE_NONE, 'exceptions' => true]);

$login = $client->handleRequest(null, 'bus_facade_context', 'login',
    ['userName' => $user, 'password' => $password], null);
if ($login['result'] !== 'success') {
    fwrite(STDERR, "login failed: {$login['resultData']}\n");
    exit(1);
}
$contextId = $login['resultData']['bus_entity_context']['beanId'];

$total = 0;
do {
    $answer = $client->handleRequest($contextId, 'bus_facade_eventNotification', 'getBatch', null,
        ['notificationTypes' => $types, 'maxNotifications' => 10000, 'markAsReadInd' => 'Y']);
    if ($answer['result'] !== 'success') {
        fwrite(STDERR, "getBatch failed: {$answer['resultData']}\n");
        exit(1);
    }
    $batch = $answer['resultData']['bus_entity_eventNotificationBatch'];
    $headers = [];
    foreach ($batch['eventMeta'] ?: [] as $trigger => $header) {
        $headers[$trigger] = str_getcsv($header, ',', '"', '');
    }
    $csv = fopen('php://memory', 'r+');
    fwrite($csv, base64_decode($batch['eventData']));
    rewind($csv);
    while (($row = fgetcsv($csv, null, ',', '"', '')) !== false) {
        echo json_encode(array_combine($headers[$row[0]], $row)), "\n";
    }
    fclose($csv);
    $total += $batch['eventCount'];
} while ($batch['eventCount'] > 0);

$client->handleRequest($contextId, 'bus_facade_context', 'logout', null, null);
fwrite(STDERR, "pulled $total events\n");
